"""Messages: what travels in POSTs, REQUESTs, RESPONSEs and STREAMs.

Any object with an integer ``ID`` and an ``encode() -> bytes`` method can be
sent (:class:`Message`); a class with an ``ID`` and a ``decode(data) ->
instance`` classmethod can be asked for as a response type
(:class:`MessageType`). :class:`CborMessage` gives a dataclass all three, encoded
with cbor2. Handlers receive :class:`BinMessage` (id and raw bytes).
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable
from typing import Any, ClassVar, Protocol, Self, TypeVar, runtime_checkable

import cbor2

from ._native import BinMessage
from .errors import UsageError

__all__ = ["Message", "MessageType", "CborMessage", "BinMessage", "RESERVED_IDS"]

RESERVED_IDS = range(0x1000, 0x1010)
"""Message ids the protocol keeps for its own messages (ping, whoami, heartbeat)."""

T = TypeVar("T", covariant=True)


@runtime_checkable
class Message(Protocol):
    """What can be sent: an id and the encoded bytes. A message instance
    (e.g. of a :class:`CborMessage` dataclass) or a :class:`BinMessage`.

    ``ID`` is read-only here so that a class attribute, an instance
    attribute and a property all satisfy it."""

    @property
    def ID(self) -> int:
        """The message id, 1..2**64-1 (0x1000..0x100F are reserved)."""
        ...

    def encode(self) -> bytes:
        """The message's bytes as they go on the wire."""
        ...


class MessageType(Protocol[T]):
    """What can decode a received message's bytes into a ``T``: a message
    class with an ``ID`` and a ``decode(data)`` classmethod, such as a
    :class:`CborMessage` dataclass (``MessageType[Greeting]`` is satisfied
    by the class ``Greeting``). ``request(msg, Greeting)`` and
    ``msg.decode(Greeting)`` return a ``Greeting``, and refuse (with
    :class:`~gofast.ProtocolError`) a message whose id is not ``Greeting.ID``."""

    @property
    def ID(self) -> int:
        """The id of the messages this type decodes."""
        ...

    def decode(self, data: bytes, /) -> T:
        """Builds the message from the bytes that came off the wire."""
        ...


def _check_id(id: int) -> int:
    if not isinstance(id, int) or not 0 < id < 1 << 64:
        raise UsageError(f"message id must be an integer in 1..2**64-1, got {id!r}")
    if id in RESERVED_IDS:
        raise UsageError(f"message id {id:#x} is reserved for built-in messages")
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

    def __init_subclass__(cls, *, id: int, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.ID = _check_id(id)

    def encode(self) -> bytes:
        """The fields as one CBOR map, keyed by field name."""
        names, get = _layout(type(self))
        return cbor2.dumps(dict(zip(names, get(self), strict=True)))

    @classmethod
    def decode(cls, data: bytes) -> Self:
        """Builds the message from a CBOR map; keys it has no field for
        (a newer peer's) are left out."""
        value = cbor2.loads(data)
        if not isinstance(value, dict):
            raise ValueError(f"{cls.__name__}: expected a CBOR map, got {type(value).__name__}")
        names, _ = _layout(cls)
        if value.keys() <= names.keys():
            return cls(**value)
        return cls(**{k: v for k, v in value.items() if k in names})


_layouts: dict[type, tuple[dict[str, None], Callable[[Any], tuple[Any, ...]]]] = {}


def _layout(cls: type) -> tuple[dict[str, None], Callable[[Any], tuple[Any, ...]]]:
    """A message class's field names (ordered, for fast membership tests)
    and a getter of their values, computed once: the dataclass decorator
    runs after ``__init_subclass__``, so this cannot happen earlier."""
    layout = _layouts.get(cls)
    if layout is None:
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"{cls.__name__} must be a dataclass to be a CborMessage")
        names = [f.name for f in dataclasses.fields(cls)]
        getter = operator.attrgetter(*names) if names else (lambda _obj: ())
        get = getter if len(names) != 1 else (lambda obj: (getter(obj),))
        layout = _layouts[cls] = (dict.fromkeys(names), get)
    return layout
