"""``Output``: an output with an explicit key or event time."""

from __future__ import annotations

from typing import Any, Generic, Optional, TypeVar, Union

from .codecs import key_bytes

__all__ = ["Output"]

U = TypeVar("U")


class Output(Generic[U]):
    """One output of a computation, with an explicit key or event time.

    A computation that returns (or yields) a plain value emits it with the
    key and event time of the input event. Return ``Output(value, key=...)``
    to route the output by another key, or ``Output(value, event_time=...)``
    to give it its own event time.

    Args:
        value: what the step's encoder turns into the output payload.
        key: the output's key; ``str`` is encoded as UTF-8. ``None`` keeps
            the input event's key. ``b""`` makes the output unkeyed.
        event_time: microseconds since the epoch. ``None`` (or 0) keeps the
            input event's time.
    """

    __slots__ = ("value", "key", "event_time")

    value: U
    key: Optional[bytes]
    event_time: Optional[int]

    def __init__(
        self,
        value: U,
        key: Union[bytes, str, None] = None,
        event_time: Optional[int] = None,
    ) -> None:
        """Build an output; a bad ``key`` or ``event_time`` raises TypeError."""
        self.value = value
        self.key = None if key is None else key_bytes(key)
        if event_time is not None and (
            not isinstance(event_time, int) or isinstance(event_time, bool)
        ):
            raise TypeError(
                f"event_time must be an int (microseconds since the epoch), "
                f"not {type(event_time).__name__}"
            )
        self.event_time = event_time

    def __eq__(self, other: Any) -> bool:
        if type(other) is not Output:
            return NotImplemented
        return (self.value, self.key, self.event_time) == (
            other.value,
            other.key,
            other.event_time,
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"Output({self.value!r}, key={self.key!r}, "
            f"event_time={self.event_time!r})"
        )
