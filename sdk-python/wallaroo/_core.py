"""Running one step over one batch: the per-event path.

``encode_reply`` is the only way events reach user code: the runner loop
calls it for every ``Batch`` frame, and ``wallaroo.testing`` calls it
(through ``process_batch``, which parses the reply back) for every batch it
makes up, so tests exercise exactly what production runs, bytes included.

The loops below are written for speed: one function call per batch, local
variables for everything looked up per event, and each event's ``Result``
written straight to bytes (``_wire.py``) rather than built as a protobuf
message: one ``bytes`` object per event on the common path. Rare paths
(errors, rolling back state) live in separate functions.

``fast_reply`` is the same path in C (``_speedups.c``), built when the SDK
is installed with a C compiler at hand: it reads the Batch frame's bytes
itself and writes the same reply bytes, calling only the user's functions
(and the helpers below for rare branches). It declines (None) what it does
not handle, and the caller then parses the frame and calls
``encode_reply``. ``WALLAROO_SDK_PURE=1`` turns it off.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from ._log import log
from ._pb import wallaroo_pb2 as pb
from . import _wire
from ._wire import EMPTY_RESULT, error_result, plain_result
from .codecs import encode_default, identity, key_bytes
from .output import Output
from .steps import (
    COMPUTATION,
    COMPUTATION_MULTI,
    KEY_BY,
    STATE_COMPUTATION,
    STATE_COMPUTATION_MULTI,
    Step,
)

__all__ = ["process_batch", "encode_reply", "describe_failure", "fast_reply", "plan"]

# Longest exception message copied into Result.error, so that one bad event
# cannot make a reply larger than the engine accepts.
MAX_ERROR_MESSAGE = 2000

_MISSING = object()

# Results a multi step may not return: iterating them "works" but is almost
# always a single output returned by mistake.
_NOT_AN_ITERABLE_OF_OUTPUTS = (str, bytes, bytearray, memoryview, Output)


def process_batch(step: Step, batch: pb.Batch) -> pb.BatchReply:
    """Run ``step`` over every event of ``batch`` and return the reply.

    The reply has the batch's id, one ``Result`` per event in order, and
    (state steps) the serialized state of every key whose bytes changed.
    User code failing on an event fails that event only (``Result.error``).
    Takes the path the runner takes: ``fast_reply`` when it is built, then
    ``encode_reply`` when it declines.
    """
    data = None
    if fast_reply is not None:
        frame = pb.Frame()
        frame.batch.CopyFrom(batch)
        data = fast_reply(frame.SerializeToString(), {batch.step_id: plan(step)})
    if data is None:
        data = encode_reply(step, batch)
    frame = pb.Frame()
    frame.ParseFromString(data)
    return frame.reply


def encode_reply(step: Step, batch: pb.Batch) -> bytes:
    """Like :func:`process_batch`, returning the serialized ``Frame`` that
    carries the reply: what the runner sends."""
    fields = _RUNNERS[step.kind](step, batch)
    return _wire.reply_frame(batch.batch_id, fields)


def describe_failure(name: str, key: bytes, exc: BaseException, when: str = "") -> str:
    """The ``Result.error`` text for ``exc`` raised on an event with ``key``.

    ``step '<name>' key <repr(key)>: <ExcType>: <message>``, with ``when``
    (e.g. ``" (loading the state)"``) appended when given.
    """
    try:
        message = str(exc)
    except Exception:  # a broken __str__ must not hide the real failure
        message = "<unprintable exception>"
    if len(message) > MAX_ERROR_MESSAGE:
        message = message[:MAX_ERROR_MESSAGE] + "..."
    return f"step '{name}' key {key!r}: {type(exc).__name__}: {message}{when}"


def _result(out: Any, encode: Callable[[Any], bytes]) -> bytes:
    """The Result field of an event that returned ``out`` (a value or an
    Output) from a single-output step."""
    if isinstance(out, Output):
        return _wire.outputs_result([_output(out, encode)])
    return plain_result(encode(out))


def _multi_result(outs: Any, encode: Callable[[Any], bytes], plain: bool) -> bytes:
    """The Result field of an event that returned ``outs`` from a multi step."""
    _check_multi_result(outs)
    fields = []
    for item in outs:
        if plain and type(item) is bytes:
            fields.append(_wire.output(item, None, 0))
        elif isinstance(item, Output):
            fields.append(_output(item, encode))
        else:
            fields.append(_wire.output(encode(item), None, 0))
    return _wire.outputs_result(fields)


def _output(out: Output, encode: Callable[[Any], bytes]) -> bytes:
    return _wire.output(encode(out.value), out.key, out.event_time or 0)


def _check_multi_result(outs: Any) -> None:
    if isinstance(outs, _NOT_AN_ITERABLE_OF_OUTPUTS):
        raise TypeError(
            f"a multi step must return an iterable of outputs, not "
            f"{type(outs).__name__} (wrap a single output in a list)"
        )


def _run_stateless(step: Step, batch: Any) -> List[bytes]:
    """The Result fields of a stateless step's batch, in event order."""
    name = step.name
    fn = step.fn
    multi = step.is_multi
    decode = None if step.decoder is identity else step.decoder
    encode = step.encoder
    plain = encode is encode_default
    fields: List[bytes] = []
    add = fields.append
    for ev in batch.events:
        try:
            out = fn(ev.payload if decode is None else decode(ev.payload))
            if out is None:
                add(EMPTY_RESULT)
            elif multi:
                add(_multi_result(out, encode, plain))
            elif plain and type(out) is bytes:
                add(plain_result(out))
            else:
                add(_result(out, encode))
        except Exception as exc:
            add(error_result(describe_failure(name, ev.key, exc)))
    return fields


def _run_key_by(step: Step, batch: Any) -> List[bytes]:
    """The Result fields of a key-by step's batch: each event's new key."""
    name = step.name
    fn = step.fn
    decode = None if step.decoder is identity else step.decoder
    fields: List[bytes] = []
    add = fields.append
    for ev in batch.events:
        try:
            key = fn(ev.payload if decode is None else decode(ev.payload))
            add(_wire.key_result(key if type(key) is bytes else key_bytes(key)))
        except Exception as exc:
            add(error_result(describe_failure(name, ev.key, exc)))
    return fields


def _run_state(step: Step, batch: Any) -> List[bytes]:
    """The Result fields of a state step's batch, in event order, then a
    StateEntry field for every key whose serialized state changed."""
    name = step.name
    fn = step.fn
    multi = step.is_multi
    decode = None if step.decoder is identity else step.decoder
    encode = step.encoder
    plain = encode is encode_default
    loads = step.state_codec.loads
    factory = step.state
    events = batch.events
    fields: List[bytes] = []
    add = fields.append

    # The engine's view of each key before this batch: the serialized state,
    # or None for a key without state.
    initial: Dict[bytes, Optional[bytes]] = {}
    for entry in batch.states:
        initial[entry.key] = entry.value if entry.present else None
    states: Dict[bytes, Any] = {}
    recovery: Optional[_Recovery] = None

    i = -1
    for ev in events:
        i += 1
        key = ev.key
        state = states.get(key, _MISSING)
        if state is _MISSING:
            value = initial.get(key)
            try:
                state = factory() if value is None else loads(value)
            except Exception as exc:
                when = " (making a new state)" if value is None else " (loading the state)"
                add(error_result(describe_failure(name, key, exc, when)))
                if recovery is None:
                    recovery = _Recovery(step, events, fields, initial, states, decode)
                recovery.failed.add(i)
                continue
            states[key] = state
        try:
            out = fn(ev.payload if decode is None else decode(ev.payload), state)
            if out is None:
                add(EMPTY_RESULT)
            elif multi:
                add(_multi_result(out, encode, plain))
            elif plain and type(out) is bytes:
                add(plain_result(out))
            else:
                add(_result(out, encode))
        except Exception as exc:
            add(error_result(describe_failure(name, key, exc)))
            if recovery is None:
                recovery = _Recovery(step, events, fields, initial, states, decode)
            recovery.roll_back(i, key)

    dumps = step.state_codec.dumps
    state_entry = _wire.state_entry
    # A copy: failing to save a key removes it from ``states``.
    for key, state in list(states.items()):
        try:
            value = dumps(state)
        except Exception as exc:
            if recovery is None:
                recovery = _Recovery(step, events, fields, initial, states, decode)
            recovery.fail_key(key, exc, " (saving the state)")
            continue
        if value != initial.get(key):
            try:
                add(state_entry(key, value))
            except TypeError as exc:  # dumps returned something not bytes-like
                if recovery is None:
                    recovery = _Recovery(step, events, fields, initial, states, decode)
                recovery.fail_key(key, exc, " (saving the state)")
    return fields


class _Recovery:
    """Puts a key's state back as it was before a failed event.

    State objects are mutated in place, so a failing event may leave its
    key's state half-changed. Instead of copying every state before every
    event (which would cost a serialization per event on the common path),
    the state is rebuilt when an event fails: from what the engine sent (or
    a new state for a new key), then by running the step again over the
    earlier events of that key in this batch that did not fail, discarding
    their outputs. Step functions must therefore be deterministic in
    ``(data, state)``, which replay after a crash requires anyway.

    Only built for a batch in which something failed.
    """

    def __init__(
        self,
        step: Step,
        events: Any,
        fields: List[bytes],
        initial: Dict[bytes, Optional[bytes]],
        states: Dict[bytes, Any],
        decode: Optional[Callable[[bytes], Any]],
    ) -> None:
        self.step = step
        self.events = events
        self.fields = fields  # the reply's Result fields, by event index
        self.initial = initial
        self.states = states
        self.decode = decode
        self.failed: Set[int] = set()
        self._by_key: Optional[Dict[bytes, List[int]]] = None

    def _indexes(self, key: bytes) -> List[int]:
        """Indexes of the events of ``key`` in the batch, in order."""
        if self._by_key is None:
            by_key: Dict[bytes, List[int]] = {}
            for j, ev in enumerate(self.events):
                by_key.setdefault(ev.key, []).append(j)
            self._by_key = by_key
        return self._by_key[key]

    def roll_back(self, failed_index: int, key: bytes) -> None:
        """Event ``failed_index`` failed: rebuild the state of ``key``."""
        self.failed.add(failed_index)
        step = self.step
        fn = step.fn
        decode = self.decode
        events = self.events
        value = self.initial.get(key)
        while True:
            earlier = [
                j
                for j in self._indexes(key)
                if j < failed_index and j not in self.failed
            ]
            if not earlier and value is None:
                # A new key whose every event so far failed has no state yet.
                self.states.pop(key, None)
                return
            try:
                state = step.state() if value is None else step.state_codec.loads(value)
            except Exception as exc:  # worked a moment ago; be safe anyway
                self.fail_key(key, exc, " (restoring the state)", failed_index)
                return
            for j in earlier:
                payload = events[j].payload
                try:
                    out = fn(payload if decode is None else decode(payload), state)
                    if step.is_multi and out is not None:
                        for _ in out:  # generators change state while iterated
                            pass
                except Exception as exc:
                    # It succeeded the first time: the step is not
                    # deterministic. Fail that event too, so that the outputs
                    # sent match the state kept, and rebuild once more.
                    log(
                        f"step '{step.name}' key {key!r}: an event failed when "
                        f"run again to restore the state: the step is not "
                        f"deterministic"
                    )
                    self._fail_event(j, key, exc, " (run again to restore the state)")
                    break
            else:
                self.states[key] = state
                return

    def fail_key(
        self, key: bytes, exc: BaseException, when: str, upto: Optional[int] = None
    ) -> None:
        """The state of ``key`` cannot be rebuilt or saved: fail every event
        of ``key`` processed so far (up to index ``upto``) and leave its
        state as the engine has it."""
        for j in self._indexes(key):
            if upto is not None and j > upto:
                break
            if j not in self.failed:
                self._fail_event(j, key, exc, when)
        self.states.pop(key, None)

    def _fail_event(self, j: int, key: bytes, exc: BaseException, when: str) -> None:
        self.failed.add(j)
        self.fields[j] = error_result(describe_failure(self.step.name, key, exc, when))


# Plan kinds of _speedups.c.
_PLAN_STATELESS = 0
_PLAN_STATE = 1
_PLAN_KEY_BY = 2

_PLAN_KIND = {
    COMPUTATION: _PLAN_STATELESS,
    COMPUTATION_MULTI: _PLAN_STATELESS,
    STATE_COMPUTATION: _PLAN_STATE,
    STATE_COMPUTATION_MULTI: _PLAN_STATE,
    KEY_BY: _PLAN_KEY_BY,
}


def plan(step: Step) -> Tuple[Any, ...]:
    """What ``fast_reply`` needs of ``step``, read once per step: the
    tuple ``(kind, name, fn, decoder or None, encoder, plain, multi,
    state factory, loads, dumps)``, as the Python loops above read them."""
    codec = step.state_codec
    return (
        _PLAN_KIND[step.kind],
        step.name,
        step.fn,
        None if step.decoder is identity else step.decoder,
        step.encoder,
        step.encoder is encode_default,
        step.is_multi,
        step.state,
        None if codec is None else codec.loads,
        None if codec is None else codec.dumps,
    )


def _failed(name: str, key: bytes, exc: BaseException) -> bytes:
    """The Result field of an event whose user code raised ``exc``."""
    return error_result(describe_failure(name, key, exc))


def _load_speedups() -> Optional[Callable[[bytes, Dict[int, Tuple[Any, ...]]], Optional[bytes]]]:
    if os.environ.get("WALLAROO_SDK_PURE") == "1":
        return None
    try:
        from . import _speedups  # type: ignore[attr-defined]
    except ImportError:
        return None
    _speedups.init(_result, _multi_result, _failed, plain_result, key_bytes, Output)
    return _speedups.reply  # type: ignore[no-any-return]


# ``fast_reply(frame_bytes, {step_id: plan(step)})``: the reply frame's
# bytes, or None to take the Python path. None when the C part is not
# built (or WALLAROO_SDK_PURE=1).
fast_reply = _load_speedups()


_RUNNERS = {
    COMPUTATION: _run_stateless,
    COMPUTATION_MULTI: _run_stateless,
    STATE_COMPUTATION: _run_state,
    STATE_COMPUTATION_MULTI: _run_state,
    KEY_BY: _run_key_by,
}
