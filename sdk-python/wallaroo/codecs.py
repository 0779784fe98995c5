"""Turning payloads and state into bytes and back.

The engine only ever sees bytes. A step's *decoder* turns the payload of an
incoming event into the value the step function receives, its *encoder*
turns what the function returns into the payload of an output, and a
*state codec* turns a key's state object into the bytes the engine stores.
"""

from __future__ import annotations

import json
import pickle
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "StateCodec",
    "PickleCodec",
    "JsonCodec",
    "identity",
    "encode_default",
    "key_bytes",
]


def identity(data: bytes) -> bytes:
    """Default decoder: hand the payload to the step unchanged, as ``bytes``."""
    return data


def encode_default(value: Any) -> bytes:
    """Default encoder.

    ``bytes`` pass through, ``bytearray`` and ``memoryview`` are copied to
    ``bytes`` and ``str`` is encoded as UTF-8. Anything else raises
    ``TypeError``, which fails that one event: give the step an ``encoder``.
    """
    if type(value) is bytes:
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise TypeError(
        f"the default encoder only takes bytes or str, not "
        f"{type(value).__name__}: give the step an encoder= that returns bytes"
    )


def key_bytes(key: Any) -> bytes:
    """Turn a key given by user code into the bytes the engine routes on.

    ``str`` is encoded as UTF-8; ``bytes``, ``bytearray`` and ``memoryview``
    become ``bytes``. Anything else raises ``TypeError``.
    """
    if type(key) is bytes:
        return key
    if isinstance(key, str):
        return key.encode("utf-8")
    if isinstance(key, (bytes, bytearray, memoryview)):
        return bytes(key)
    raise TypeError(f"a key must be bytes or str, not {type(key).__name__}")


@runtime_checkable
class StateCodec(Protocol):
    """What a state codec provides.

    ``dumps`` must be deterministic: the runner only sends back the state of
    a key when ``dumps`` gives different bytes than the engine sent, so a
    codec that encodes equal objects differently costs bandwidth, not
    correctness. ``loads(dumps(obj))`` must give back an equivalent object.
    """

    def dumps(self, obj: Any) -> bytes:
        """Serialize a state object."""
        ...

    def loads(self, data: bytes) -> Any:
        """Rebuild a state object from ``dumps`` output."""
        ...


class PickleCodec:
    """State codec using :mod:`pickle` (the default).

    Handles any picklable object, including instances of the state class.
    The bytes are only ever read back by this SDK, so pickle's lack of
    portability across languages does not matter; its lack of safety with
    untrusted input does not either, as the bytes come from this step.
    """

    __slots__ = ("protocol",)

    def __init__(self, protocol: int = pickle.HIGHEST_PROTOCOL) -> None:
        """Use pickle ``protocol`` (the highest available by default)."""
        self.protocol = protocol

    def dumps(self, obj: Any) -> bytes:
        """Pickle ``obj``."""
        return pickle.dumps(obj, self.protocol)

    def loads(self, data: bytes) -> Any:
        """Unpickle ``data``."""
        return pickle.loads(data)

    def __repr__(self) -> str:
        return f"PickleCodec(protocol={self.protocol})"


class JsonCodec:
    """State codec using JSON (UTF-8, sorted keys, no spaces).

    The state must be made of dicts, lists, strings, numbers, booleans and
    ``None``; use it with ``state=dict`` (or another factory returning JSON
    data). Tuples come back as lists. Sorted keys keep the bytes stable, so
    an unchanged state is recognised as unchanged.
    """

    __slots__ = ()

    def dumps(self, obj: Any) -> bytes:
        """Encode ``obj`` as compact JSON with sorted keys."""
        return json.dumps(
            obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode("utf-8")

    def loads(self, data: bytes) -> Any:
        """Decode JSON ``data``."""
        return json.loads(data)

    def __repr__(self) -> str:
        return "JsonCodec()"
