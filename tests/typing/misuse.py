# ruff: noqa: B018  (attribute reads are the wrong uses here)
"""Wrong uses of the typed API that mypy --strict must reject, one a line.

Never run: ``tests/test_typing.py`` type-checks it and compares mypy's
errors with the ``# E: code`` comment at the end of each wrong line.
"""

from __future__ import annotations

from dataclasses import dataclass

import gofast


@dataclass
class Query(gofast.CborMessage, id=500):
    key: str


@dataclass
class Reply(gofast.CborMessage, id=501):
    value: int


def misuse(t: gofast.Transport, s: gofast.Stream, msg: gofast.BinMessage) -> None:
    t.post("not a message")  # E: arg-type
    t.post(Query)  # E: arg-type
    t.post_many([b"bytes"])  # E: list-item
    s.send(42)  # E: arg-type
    s.respond({"key": "k"})  # E: arg-type
    t.stream(None)  # E: arg-type
    t.request(Query("k"), str)  # E: call-overload
    t.request_many([Query("k")], int)  # E: call-overload
    wrong: Query = t.request(Query("k"), Reply)  # E: assignment
    t.request(Query("k"), Reply).key  # E: attr-defined
    t.request(Query("k")).value  # E: attr-defined
    t.request_many([Query("k")], Reply)[0].key  # E: attr-defined
    msg.decode(int)  # E: arg-type
    msg.decode(Reply).key  # E: attr-defined
    t.request_as(Query("k"), Reply)  # E: attr-defined
    print(wrong)


def fine(t: gofast.Transport, s: gofast.Stream, msg: gofast.BinMessage) -> None:
    # The right uses next to them: these lines must raise nothing.
    t.post(Query("k"))
    t.post(msg)
    t.post_many([Query("a"), Query("b")])
    s.send(Reply(1))
    s.respond(msg)
    reply: Reply = t.request(Query("k"), Reply)
    raw: gofast.BinMessage = t.request(Query("k"))
    replies: list[Reply] = t.request_many([Query("k")], Reply)
    query: Query = msg.decode(Query)
    print(reply.value, raw.id, replies[0].value, query.key, gofast.__version__.split("."))
