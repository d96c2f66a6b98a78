"""The README's first example runs as written (on a free port)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from conftest import wait_until

README = Path(__file__).parents[1] / "README.md"


def test_first_example_runs_and_answers() -> None:
    code = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)[0]
    assert "9998" in code, "the example's port changed; update this test"
    listen = 'gofast.listen(("127.0.0.1", 9998))'
    assert listen in code
    code = code.replace(listen, 'gofast.listen(("127.0.0.1", 0)); PORT = listener.address[1]')
    code = code.replace('connect(("127.0.0.1", 9998)', 'connect(("127.0.0.1", PORT)')
    # dataclasses look the defining module up in sys.modules: borrow ours.
    scope: dict[str, Any] = {"__name__": __name__}
    exec(compile(code, str(README), "exec"), scope)
    assert repr(scope["reply"]) == "Greeting(text='re: hello')"
    # The example's server thread stores its transport after its handshake,
    # which may end after the client's.
    wait_until(lambda: len(scope["servers"]) == 1, what="the server thread finishes")
    (server,) = scope["servers"]
    try:
        # close() flushed the POST; the server handles it when it reads it.
        wait_until(lambda: server.stats()["n_rxpost"] == 1, what="the POST arrives")
        assert server.stats()["n_handler_errors"] == 0
    finally:
        server.close()
        scope["listener"].close()


def test_the_asyncio_example_runs(capsys: Any) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    (code,) = [b for b in blocks if "gofast.aio.Server" in b]
    scope: dict[str, Any] = {"__name__": __name__}
    exec(compile(code, str(README), "exec"), scope)
    assert capsys.readouterr().out.splitlines() == ["Greeting(text='re: hello')", "3", "2", "1"]
