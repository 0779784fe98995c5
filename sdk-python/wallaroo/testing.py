"""Run steps in-process, as the engine would, to test them without it.

``Harness`` builds the same ``Batch`` frames the engine sends, runs them
through the same function the runner uses (``wallaroo._core.process_batch``)
and applies the replies as the engine does: outputs keep or take keys, and
the serialized state of each key is kept between calls::

    steps = build_steps()                 # your program's Steps
    h = Harness(steps)
    assert h.run("count", [b"a", b"a"], key=b"k") == [
        Emitted(b"k", b"1"), Emitted(b"k", b"2")]
    assert h.state("count", b"k").total == 2
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, List, NamedTuple, Optional, Sequence, Union

from ._core import process_batch
from ._pb import wallaroo_pb2 as pb
from .codecs import key_bytes
from .steps import KEY_BY, Step, Steps

__all__ = ["Harness", "Emitted", "StepFailed"]

KeyArg = Union[bytes, str, Callable[[bytes], Union[bytes, str]]]


class Emitted(NamedTuple):
    """One event leaving a step, as the engine sees it.

    ``payload`` is the encoded output (or, after a key-by step, the input
    payload unchanged); ``key`` is the output's key; ``event_time`` is its
    time in microseconds (0 = unknown), inherited from the input unless the
    step gave one.
    """

    key: bytes
    payload: bytes
    event_time: int = 0


class StepFailed(Exception):
    """Raised by ``Harness.run`` and ``Harness.pipeline`` when user code
    failed on some events; ``errors`` holds each ``Result.error`` text."""

    def __init__(self, errors: List[str]) -> None:
        """Hold the error texts of the failed events."""
        super().__init__(
            f"{len(errors)} event(s) failed:\n" + "\n".join(errors)
        )
        self.errors = errors


class Harness:
    """Runs the steps of a ``Steps`` over lists of payloads, like the engine.

    State is kept per step and key between calls, serialized with the
    step's ``state_codec`` exactly as the engine stores it.

    Attributes:
        errors: the ``Result.error`` texts of the last ``run``/``pipeline``.
        state_writes: the keys whose state the last call sent back, per step
            name, in order (only keys whose serialized state changed).
    """

    def __init__(self, steps: Steps) -> None:
        """Test the steps registered in ``steps``."""
        if not isinstance(steps, Steps):
            raise TypeError(f"Harness takes a wallaroo.Steps, not {type(steps).__name__}")
        self._steps = steps
        self._store: Dict[str, Dict[bytes, bytes]] = {}
        self._batch_id = 0
        self.errors: List[str] = []
        self.state_writes: Dict[str, List[bytes]] = {}

    def run(
        self,
        step: str,
        payloads: Iterable[Union[bytes, str]],
        *,
        key: KeyArg = b"",
        event_time: int = 0,
        batch_size: Optional[int] = None,
        raise_errors: bool = True,
    ) -> List[Emitted]:
        """Run step ``step`` over ``payloads`` and return what it emits.

        Args:
            step: the registered step name.
            payloads: the input payloads (``str`` is encoded as UTF-8).
            key: the key of every input event, or a function of the payload
                returning it.
            event_time: the event time of every input event.
            batch_size: events per batch (default: all in one batch).
            raise_errors: raise ``StepFailed`` (after applying the batches,
                state included) if user code failed on any event; with
                False, the errors are only kept in ``self.errors``.
        """
        events = [
            Emitted(_key_for(key, p), p, event_time) for p in map(_payload, payloads)
        ]
        self.errors = []
        self.state_writes = {}
        out = self._run_step(self._get(step), events, batch_size)
        if raise_errors and self.errors:
            raise StepFailed(list(self.errors))
        return out

    def pipeline(
        self,
        steps: Sequence[str],
        payloads: Iterable[Union[bytes, str]],
        *,
        key: KeyArg = b"",
        event_time: int = 0,
        batch_size: Optional[int] = None,
        raise_errors: bool = True,
    ) -> List[Emitted]:
        """Run ``payloads`` through ``steps`` in turn, as the engine chains
        them: what one step emits, with its key, is the input of the next.

        Arguments as for :meth:`run`. With ``raise_errors``, ``StepFailed``
        is raised after the first step on which user code failed.
        """
        stages = [self._get(name) for name in steps]
        events = [
            Emitted(_key_for(key, p), p, event_time) for p in map(_payload, payloads)
        ]
        self.errors = []
        self.state_writes = {}
        for stage in stages:
            events = self._run_step(stage, events, batch_size)
            if raise_errors and self.errors:
                raise StepFailed(list(self.errors))
        return events

    def state(self, step: str, key: Union[bytes, str]) -> Any:
        """The state object of ``key`` in state step ``step``, decoded with
        its ``state_codec``; ``None`` if the key has no state."""
        registered = self._get(step)
        if registered.state_codec is None:
            raise ValueError(f"step {step!r} is a {registered.kind}, which has no state")
        value = self._store.get(step, {}).get(key_bytes(key))
        return None if value is None else registered.state_codec.loads(value)

    def _get(self, name: str) -> Step:
        if name not in self._steps:
            raise KeyError(
                f"no step {name!r}; registered: {', '.join(self._steps.names()) or 'none'}"
            )
        return self._steps.get(name)

    def _run_step(
        self, step: Step, events: List[Emitted], batch_size: Optional[int]
    ) -> List[Emitted]:
        size = batch_size or max(1, len(events))
        emitted: List[Emitted] = []
        for start in range(0, len(events), size):
            self._run_batch(step, events[start : start + size], emitted)
        return emitted

    def _run_batch(self, step: Step, events: List[Emitted], emitted: List[Emitted]) -> None:
        self._batch_id += 1
        batch = pb.Batch(batch_id=self._batch_id, step_id=1)
        for ev in events:
            batch.events.add(key=ev.key, payload=ev.payload, event_time=ev.event_time)
        store = self._store.setdefault(step.name, {})
        if step.state_codec is not None:
            # One entry per distinct key of the batch, as the engine sends.
            for k in dict.fromkeys(ev.key for ev in events):
                value = store.get(k)
                entry = batch.states.add(key=k)
                if value is not None:
                    entry.value = value
                    entry.present = True
        reply = process_batch(step, batch)
        if reply.batch_id != batch.batch_id or len(reply.results) != len(events):
            raise AssertionError("the reply does not answer the batch")  # an SDK bug
        for ev, result in zip(events, reply.results):
            if result.error:
                self.errors.append(result.error)
            elif step.kind == KEY_BY:
                emitted.append(Emitted(result.key, ev.payload, ev.event_time))
            else:
                for o in result.outputs:
                    emitted.append(
                        Emitted(
                            o.key if o.has_key else ev.key,
                            o.payload,
                            o.event_time or ev.event_time,
                        )
                    )
        writes = self.state_writes.setdefault(step.name, [])
        for entry in reply.states:
            writes.append(entry.key)
            if entry.present:
                store[entry.key] = entry.value
            else:
                store.pop(entry.key, None)


def _payload(p: Union[bytes, str]) -> bytes:
    if isinstance(p, str):
        return p.encode("utf-8")
    if isinstance(p, (bytes, bytearray, memoryview)):
        return bytes(p)
    raise TypeError(f"a payload must be bytes or str, not {type(p).__name__}")


def _key_for(key: KeyArg, payload: bytes) -> bytes:
    return key_bytes(key(payload) if callable(key) else key)
