"""``Steps``: the registry of the step functions a runner program serves.

A runner program builds one ``Steps`` in its ``main()``, registers each step
function under the stable name the topology uses for it, and hands it to
:func:`wallaroo.run`. Nothing is registered at import time.
"""

from __future__ import annotations

from typing import (
    Any,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Optional,
    TypeVar,
    Union,
)

from ._pb import wallaroo_pb2 as pb
from .codecs import PickleCodec, StateCodec, encode_default, identity
from .output import Output

__all__ = ["Steps", "Step"]

T = TypeVar("T")  # decoded input
U = TypeVar("U")  # output value, before encoding
S = TypeVar("S")  # state object

# Step kinds, named after the method that registers them.
COMPUTATION = "computation"
COMPUTATION_MULTI = "computation_multi"
STATE_COMPUTATION = "state_computation"
STATE_COMPUTATION_MULTI = "state_computation_multi"
KEY_BY = "key_by"

_WIRE_KIND = {
    COMPUTATION: pb.STEP_KIND_STATELESS,
    COMPUTATION_MULTI: pb.STEP_KIND_STATELESS,
    STATE_COMPUTATION: pb.STEP_KIND_STATE,
    STATE_COMPUTATION_MULTI: pb.STEP_KIND_STATE,
    KEY_BY: pb.STEP_KIND_KEY_BY,
}


class Step:
    """One registered step: its name, kind, function and codecs.

    Built by the ``Steps`` methods; read-only by convention. ``kind`` is the
    name of the method that registered it (``"computation"``,
    ``"computation_multi"``, ``"state_computation"``,
    ``"state_computation_multi"`` or ``"key_by"``). ``state`` and
    ``state_codec`` are ``None`` for steps without state; ``encoder`` is
    ``None`` for key-by steps.
    """

    __slots__ = (
        "name",
        "kind",
        "fn",
        "decoder",
        "encoder",
        "state",
        "state_codec",
    )

    def __init__(
        self,
        name: str,
        kind: str,
        fn: Callable[..., Any],
        decoder: Callable[[bytes], Any],
        encoder: Optional[Callable[[Any], bytes]],
        state: Optional[Callable[[], Any]] = None,
        state_codec: Optional[StateCodec] = None,
    ) -> None:
        """Validate and hold one step's parts (use the ``Steps`` methods)."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a step name must be a non-empty str, got {name!r}")
        if kind not in _WIRE_KIND:
            raise ValueError(f"unknown step kind {kind!r}")
        _check_callable(name, "fn", fn)
        _check_callable(name, "decoder", decoder)
        if encoder is not None:
            _check_callable(name, "encoder", encoder)
        stateful = kind in (STATE_COMPUTATION, STATE_COMPUTATION_MULTI)
        if stateful:
            _check_callable(name, "state", state)
        elif state is not None or state_codec is not None:
            raise ValueError(f"step {name!r}: a {kind} step has no state")
        if stateful and not isinstance(state_codec, StateCodec):
            raise TypeError(
                f"step {name!r}: state_codec must have dumps(obj) -> bytes and "
                f"loads(bytes) -> obj, got {state_codec!r}"
            )
        self.name = name
        self.kind = kind
        self.fn = fn
        self.decoder = decoder
        self.encoder = encoder
        self.state = state
        self.state_codec = state_codec

    @property
    def wire_kind(self) -> int:
        """The ``StepKind`` value of protocol/wallaroo.proto for this step."""
        return _WIRE_KIND[self.kind]

    @property
    def is_multi(self) -> bool:
        """True when the function returns an iterable of outputs."""
        return self.kind in (COMPUTATION_MULTI, STATE_COMPUTATION_MULTI)

    def __repr__(self) -> str:
        return f"Step({self.name!r}, kind={self.kind!r}, fn={self.fn!r})"


def _check_callable(step: str, what: str, obj: Any) -> None:
    if not callable(obj):
        raise TypeError(f"step {step!r}: {what} must be callable, got {obj!r}")


class Steps:
    """The steps one runner program can serve, by name.

    Each name must be the ``function`` the topology gives the step (which
    defaults to the step's name); the engine assigns steps to the runner by
    that name. Registering a name twice raises ``ValueError``.

    Example::

        steps = wallaroo.Steps()
        steps.computation("double", lambda data: data * 2)
        wallaroo.run(steps)
    """

    def __init__(self) -> None:
        """Start with no step."""
        self._steps: Dict[str, Step] = {}

    def _add(self, step: Step) -> None:
        if step.name in self._steps:
            raise ValueError(f"step {step.name!r} is already registered")
        self._steps[step.name] = step

    def computation(
        self,
        name: str,
        fn: Callable[[T], Union[U, Output[U], None]],
        *,
        decoder: Callable[[bytes], T] = identity,
        encoder: Callable[[U], bytes] = encode_default,
    ) -> None:
        """Register a stateless step emitting at most one output per event.

        ``fn(data)`` gets the decoded payload and returns the output value,
        an :class:`~wallaroo.Output`, or ``None`` to emit nothing (a filter).
        """
        self._add(Step(name, COMPUTATION, fn, decoder, encoder))

    def computation_multi(
        self,
        name: str,
        fn: Callable[[T], Optional[Iterable[Union[U, Output[U]]]]],
        *,
        decoder: Callable[[bytes], T] = identity,
        encoder: Callable[[U], bytes] = encode_default,
    ) -> None:
        """Register a stateless step emitting any number of outputs per event.

        ``fn(data)`` returns an iterable (a list, a generator...) of output
        values or :class:`~wallaroo.Output`; ``None`` emits nothing. Returning
        a ``str`` or ``bytes`` is an error, as it is almost always a single
        output returned by mistake.
        """
        self._add(Step(name, COMPUTATION_MULTI, fn, decoder, encoder))

    def state_computation(
        self,
        name: str,
        fn: Callable[[T, S], Union[U, Output[U], None]],
        *,
        state: Callable[[], S],
        decoder: Callable[[bytes], T] = identity,
        encoder: Callable[[U], bytes] = encode_default,
        state_codec: Optional[StateCodec] = None,
    ) -> None:
        """Register a keyed state step emitting at most one output per event.

        ``fn(data, state)`` gets the decoded payload and the state object of
        the event's key, mutates the state in place, and returns like a
        :meth:`computation`. ``state`` (a class or zero-argument factory)
        makes the state of a key seen for the first time. ``state_codec``
        (default :class:`~wallaroo.PickleCodec`) serializes it for the engine.
        """
        self._add(
            Step(
                name,
                STATE_COMPUTATION,
                fn,
                decoder,
                encoder,
                state,
                state_codec if state_codec is not None else PickleCodec(),
            )
        )

    def state_computation_multi(
        self,
        name: str,
        fn: Callable[[T, S], Optional[Iterable[Union[U, Output[U]]]]],
        *,
        state: Callable[[], S],
        decoder: Callable[[bytes], T] = identity,
        encoder: Callable[[U], bytes] = encode_default,
        state_codec: Optional[StateCodec] = None,
    ) -> None:
        """Register a keyed state step emitting any number of outputs per event.

        Like :meth:`state_computation`, with ``fn(data, state)`` returning an
        iterable as in :meth:`computation_multi`.
        """
        self._add(
            Step(
                name,
                STATE_COMPUTATION_MULTI,
                fn,
                decoder,
                encoder,
                state,
                state_codec if state_codec is not None else PickleCodec(),
            )
        )

    def key_by(
        self,
        name: str,
        fn: Callable[[T], Union[bytes, str]],
        *,
        decoder: Callable[[bytes], T] = identity,
    ) -> None:
        """Register a step that gives each event a new key.

        ``fn(data)`` returns the new key as ``bytes`` or ``str`` (encoded as
        UTF-8). The event's payload goes on unchanged.
        """
        self._add(Step(name, KEY_BY, fn, decoder, None))

    def get(self, name: str) -> Step:
        """The step registered as ``name``; ``KeyError`` if there is none."""
        return self._steps[name]

    def names(self) -> List[str]:
        """The registered names, in registration order."""
        return list(self._steps)

    def __contains__(self, name: object) -> bool:
        return name in self._steps

    def __iter__(self) -> Iterator[Step]:
        return iter(list(self._steps.values()))

    def __len__(self) -> int:
        return len(self._steps)

    def __repr__(self) -> str:
        return f"Steps({self.names()!r})"
