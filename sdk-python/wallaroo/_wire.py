"""Writing a BatchReply frame by hand.

The runner answers every batch with a ``Frame`` holding a ``BatchReply``:
one ``Result`` per event, then the changed states. Building that through
the protobuf runtime costs a message object per result and per output, and
a Python runner spent about a fifth of its time per event doing so. The
messages are small and fixed (protocol/wallaroo.proto), so this module
writes their bytes directly: each result is one ``bytes`` object, and the
frame is one join.

The bytes are what protobuf writes for the same message: fields in number
order, fields at their default value left out. ``tests/test_wire.py``
checks that against the protobuf runtime for random replies.

Field numbers used (wallaroo.proto): Frame.reply = 7; BatchReply.batch_id = 1,
results = 2, states = 3; Result.outputs = 1, key = 2, error = 3;
Output.key = 1, has_key = 2, payload = 3, event_time = 4; StateEntry.key = 1,
value = 2, present = 3.
"""

from __future__ import annotations

from typing import Dict, List, Optional

__all__ = [
    "EMPTY_RESULT",
    "varint",
    "plain_result",
    "output",
    "outputs_result",
    "key_result",
    "error_result",
    "state_entry",
    "reply_frame",
]

_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1
_U64 = (1 << 64) - 1

_ONE_BYTE = [bytes((n,)) for n in range(0x80)]

# Longest key + value of a StateEntry whose body (two tags, two lengths, the
# present flag: 6 bytes) still has a one-byte length.
_SHORT_ENTRY = 0x7F - 6

# A Result with nothing in it: the event produced no output. Field 2 of
# BatchReply, length 0.
EMPTY_RESULT = b"\x12\x00"


def varint(n: int) -> bytes:
    """``n`` (0 <= n < 2**64) as a protobuf varint."""
    if n < 0x80:
        return _ONE_BYTE[n]
    if n < 0x4000:
        return bytes(((n & 0x7F) | 0x80, n >> 7))
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(tag: bytes, data: bytes) -> bytes:
    """A length-delimited field: its tag, the length, the bytes."""
    return tag + varint(len(data)) + data


# The bytes before the payload of a Result holding one Output that has only
# a payload, by payload length. Records of one application tend to have a
# few lengths, so the cache stays small; it is bounded anyway.
_PLAIN_PREFIX: Dict[int, bytes] = {}
_PLAIN_PREFIX_MAX_LEN = 1 << 14


def _plain_prefix(n: int) -> bytes:
    # The general encoding of such a result, without its payload.
    whole = outputs_result([output(bytes(n), None, 0)])
    return whole[: len(whole) - n]


def plain_result(payload: bytes) -> bytes:
    """The Result field of an event with one output that keeps the input's
    key and time: the common case."""
    n = len(payload)
    prefix = _PLAIN_PREFIX.get(n)
    if prefix is None:
        prefix = _plain_prefix(n)
        if n < _PLAIN_PREFIX_MAX_LEN:
            _PLAIN_PREFIX[n] = prefix
    return prefix + payload


def output(payload: bytes, key: Optional[bytes], event_time: int) -> bytes:
    """One Output field of a Result. ``key`` None keeps the input's key;
    ``event_time`` 0 keeps its time. Raises ValueError for an event time
    outside int64 (the event then fails, as with the protobuf runtime)."""
    body = b""
    if key is not None:
        if key:
            body = _field(b"\x0a", key)
        body += b"\x10\x01"
    if payload:
        body += _field(b"\x1a", payload)
    if event_time:
        if not _INT64_MIN <= event_time <= _INT64_MAX:
            raise ValueError(f"event_time {event_time} is outside int64")
        body += b"\x20" + varint(event_time & _U64)
    return _field(b"\x0a", body)


def outputs_result(outputs: List[bytes]) -> bytes:
    """The Result field of an event with these Output fields."""
    return _field(b"\x12", b"".join(outputs))


def key_result(key: bytes) -> bytes:
    """The Result field of a key-by step's event: its new key."""
    if not key:
        return EMPTY_RESULT
    return _field(b"\x12", _field(b"\x12", key))


def error_result(message: str) -> bytes:
    """The Result field of a failed event. Text that is not valid UTF-8
    (lone surrogates from a broken ``__str__``) is escaped, not refused."""
    data = message.encode("utf-8", "backslashreplace")
    if not data:
        return EMPTY_RESULT
    return _field(b"\x12", _field(b"\x1a", data))


def state_entry(key: bytes, value: bytes) -> bytes:
    """The StateEntry field of a reply: ``key`` now has state ``value``."""
    kl = len(key)
    vl = len(value)
    if kl and vl and kl + vl <= _SHORT_ENTRY:
        # Every length fits one varint byte: one formatting call instead of
        # four concatenations (a state step writes one entry per changed
        # key, so this is on the per-event path of most state steps).
        return b"\x1a%c\x0a%c%b\x12%c%b\x18\x01" % (kl + vl + 6, kl, key, vl, value)
    body = b""
    if key:
        body = _field(b"\x0a", key)
    if value:
        body += _field(b"\x12", value)
    return _field(b"\x1a", body + b"\x18\x01")


def reply_frame(batch_id: int, fields: List[bytes]) -> bytes:
    """The whole Frame: a BatchReply with ``batch_id`` and ``fields`` (the
    Result fields in event order, then the StateEntry fields)."""
    head = b"\x08" + varint(batch_id) if batch_id else b""
    body = head + b"".join(fields)
    return b"\x3a" + varint(len(body)) + body
