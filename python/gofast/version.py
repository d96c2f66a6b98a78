"""Versions exchanged in the handshake."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Version64"]


@dataclass(frozen=True, order=True)
class Version64:
    """A version that is one unsigned 64-bit number, like the reference's
    ``gofast.Version64``; it travels as a CBOR unsigned integer."""

    value: int

    def __post_init__(self) -> None:
        if not 0 <= self.value < 1 << 64:
            raise ValueError(f"Version64 must fit 64 unsigned bits, got {self.value}")

    def __int__(self) -> int:
        return self.value

    def __str__(self) -> str:
        return str(self.value)
