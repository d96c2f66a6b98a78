"""The README's first example runs as written (on a free port)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

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
    (server,) = scope["servers"]
    try:
        assert server.stats()["n_rxpost"] == 1  # close() flushed the POST
        assert server.stats()["n_handler_errors"] == 0
    finally:
        server.close()
        scope["listener"].close()
