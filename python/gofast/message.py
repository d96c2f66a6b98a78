"""Messages: what travels in POSTs, REQUESTs, RESPONSEs and STREAMs.

Any object with an integer ``ID`` and an ``encode() -> bytes`` method can be
sent; a type with a ``decode(data) -> instance`` classmethod can be asked for
as a response type. :class:`CborMessage` gives a dataclass all three, encoded
with cbor2. Handlers receive :class:`BinMessage` (id and raw bytes).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Protocol, Self, TypeVar, runtime_checkable

import cbor2

from ._native import BinMessage

__all__ = ["Message", "MessageType", "CborMessage", "BinMessage", "RESERVED_IDS"]

RESERVED_IDS = range(0x1000, 0x1010)
"""Message ids the protocol keeps for its own messages (ping, whoami, heartbeat)."""

T = TypeVar("T", covariant=True)


@runtime_checkable
class Message(Protocol):
    """What can be sent: an id and the encoded bytes."""

    ID: ClassVar[int]

    def encode(self) -> bytes: ...


class MessageType(Protocol[T]):
    """What can decode a received message's bytes (e.g. a message class)."""

    ID: ClassVar[int]

    def decode(self, data: bytes, /) -> T: ...


def _check_id(id: int) -> int:
    if not isinstance(id, int) or not 0 < id < 1 << 64:
        raise ValueError(f"message id must be an integer in 1..2**64-1, got {id!r}")
    if id in RESERVED_IDS:
        raise ValueError(f"message id {id:#x} is reserved for built-in messages")
    return id


class CborMessage:
    """Base for dataclass messages encoded with cbor2 as a map of their fields.

    >>> @dataclasses.dataclass
    ... class Greeting(CborMessage, id=100):
    ...     text: str
    >>> Greeting.decode(Greeting("hi").encode())
    Greeting(text='hi')

    Fields the peer sends that the class does not know are ignored, so a
    newer peer may add fields.
    """

    ID: ClassVar[int]
    _fields: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, *, id: int, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.ID = _check_id(id)

    def encode(self) -> bytes:
        fields = type(self)._field_names()
        return cbor2.dumps({name: getattr(self, name) for name in fields})

    @classmethod
    def decode(cls, data: bytes) -> Self:
        value = cbor2.loads(data)
        if not isinstance(value, dict):
            raise ValueError(f"{cls.__name__}: expected a CBOR map, got {type(value).__name__}")
        fields = cls._field_names()
        return cls(**{k: v for k, v in value.items() if k in fields})

    @classmethod
    def _field_names(cls) -> tuple[str, ...]:
        names = cls.__dict__.get("_fields")
        if not names:
            if not dataclasses.is_dataclass(cls):
                raise TypeError(f"{cls.__name__} must be a dataclass to be a CborMessage")
            names = tuple(f.name for f in dataclasses.fields(cls))
            cls._fields = names
        return names
