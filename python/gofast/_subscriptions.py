"""What a server subscribes once and applies to every connection it
accepts: the same for ``gofast.Server`` and ``gofast.aio.Server``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from .errors import UsageError
from .message import BinMessage, _check_id

H = TypeVar("H")
BatchHandler = Callable[[list[BinMessage]], object]


class _Subscribable(Protocol):
    def subscribe(self, message_type: Any, handler: Any) -> Any: ...
    def subscribe_batch(self, message_type: Any, handler: Any) -> Any: ...
    def default_handler(self, handler: Any) -> Any: ...


class Subscriptions(Generic[H]):
    """Handlers by message id, a batch handler list and a default handler;
    fixed once ``frozen`` (the server has started)."""

    def __init__(self) -> None:
        self.handlers: list[tuple[int, H]] = []
        self.batch: list[tuple[int, BatchHandler]] = []
        self.default: H | None = None
        self.frozen = False

    def _check(self) -> None:
        if self.frozen:
            raise UsageError("subscribe handlers before the server starts")

    def add(self, message_type: type[Any] | int, handler: H) -> None:
        self._check()
        self.handlers.append((_id_of(message_type), handler))

    def add_batch(self, message_type: type[Any] | int, handler: BatchHandler) -> None:
        self._check()
        self.batch.append((_id_of(message_type), handler))

    def set_default(self, handler: H | None) -> None:
        self._check()
        self.default = handler

    def apply(self, t: _Subscribable) -> None:
        """Subscribes everything on ``t``. (The transport itself counts the
        requests its handlers have not answered, for a graceful stop.)"""
        for msg_id, handler in self.handlers:
            t.subscribe(msg_id, handler)
        for msg_id, batch in self.batch:
            t.subscribe_batch(msg_id, batch)
        if self.default is not None:
            t.default_handler(self.default)


def _id_of(message_type: type[Any] | int) -> int:
    msg_id = message_type if isinstance(message_type, int) else message_type.ID
    return _check_id(msg_id)
