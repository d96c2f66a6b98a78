"""The messages examples/server.py and examples/client.py exchange: one
definition both sides import, as two services would share a schema."""

from __future__ import annotations

from dataclasses import dataclass

import gofast


@dataclass
class MsgPost(gofast.CborMessage, id=500):
    """Posted by the client; counted by the server."""

    seq: int
    text: str


@dataclass
class MsgRequest(gofast.CborMessage, id=501):
    """Asks for ``number`` squared."""

    number: int


@dataclass
class MsgResponse(gofast.CborMessage, id=502):
    """The answer to a MsgRequest."""

    number: int
    square: int


@dataclass
class MsgBye(gofast.CborMessage, id=503):
    """Ends a session; the server answers with what it counted."""

    posts: int = 0
    requests: int = 0
