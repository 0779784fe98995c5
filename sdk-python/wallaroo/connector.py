"""Connectors: sources and sinks as programs of their own.

A **source** brings events into ``wallaroo-engine`` from another system (a
queue, files, a socket); a **sink** takes the outputs of a pipeline out.
Subclass :class:`Source`, :class:`Sink` or :class:`TwoPhaseSink`, write the
part that talks to your system, and hand an instance to
:func:`run_source` or :func:`run_sink`, which speak the connector protocol
(protocol/README.md, section 6) for you::

    from __future__ import annotations

    import sys
    from wallaroo.connector import End, Message, Source, StreamSpec, run_source

    class Numbers(Source):
        def __init__(self) -> None:
            self.next = 1

        def streams(self) -> list[StreamSpec]:
            return [StreamSpec("numbers")]

        def open(self, stream: str, resume_after: int) -> None:
            self.next = resume_after + 1

        def poll(self, max_events: int, timeout: float) -> list[Message | End]:
            batch: list[Message | End] = []
            while len(batch) < max_events and self.next <= 100:
                batch.append(Message("numbers", self.next, b"%d" % self.next))
                self.next += 1
            if self.next > 100:
                batch.append(End("numbers"))
            return batch

    if __name__ == "__main__":
        sys.exit(run_source(Numbers()))

The SDK handles the handshake, credits (``poll`` is never asked for more
than the engine granted), keeping every sent message until the engine
acknowledges it and sending it again after a reconnect, heartbeats,
``Reconnect``, reconnecting (or exiting, for a connector the engine
spawned), SIGTERM, and the sink's replies and two-phase commit frames.
docs/connectors.md is the guide; connectors/file_source and
connectors/file_sink are worked examples.

Exit statuses (what ``run_source`` and ``run_sink`` return):
:data:`EXIT_OK` (0) after a clean end: every stream ended, the engine said
Goodbye, or SIGTERM; :data:`EXIT_FAILURE` (1) when the connection is lost
(spawned connectors: the engine starts them again), the engine cannot be
reached, or the connector's own code raised; :data:`EXIT_USAGE` (2) for a
missing or invalid configuration or an unsupported protocol version;
:data:`EXIT_REFUSED` (3) when the engine refused the handshake (a wrong
token, for example).
"""

from __future__ import annotations

import abc
import dataclasses
import os
import threading
from typing import List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

from ._connector_session import EXIT_FAILURE, EXIT_OK, EXIT_REFUSED, EXIT_USAGE
from ._log import log, set_identity

__all__ = [
    "Source",
    "Sink",
    "TwoPhaseSink",
    "Message",
    "End",
    "Output",
    "StreamSpec",
    "ConnectorConfig",
    "ConfigError",
    "run_source",
    "run_sink",
    "EXIT_OK",
    "EXIT_FAILURE",
    "EXIT_USAGE",
    "EXIT_REFUSED",
]

DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024


class StreamSpec(NamedTuple):
    """A stream a source opens at start.

    Attributes:
        name: stable across connections and restarts (a queue, a file, a
            partition): the engine keeps positions per (source, name). Not
            empty, unique within the source.
        resume_hint: the source's own idea of the last acknowledged message
            id (an offset it stored), 0 for none. The engine's position wins
            when it has one.
    """

    name: str
    resume_hint: int = 0


class Message(NamedTuple):
    """One message a source produces.

    Attributes:
        stream: the name of an open stream of this source.
        id: the message id, > 0, increasing within the stream (gaps are
            allowed) and stable: the same message gets the same id when it
            is produced again after a restart. The engine drops ids it has
            already accepted.
        payload: the event's bytes, opaque to the engine.
        key: the routing key; ``b""`` (the default) is unkeyed.
        event_time: microseconds since the Unix epoch; 0 is unknown.
    """

    stream: str
    id: int
    payload: bytes
    key: bytes = b""
    event_time: int = 0


class End(NamedTuple):
    """Returned by ``Source.poll`` after a bounded stream's last message: no
    message of ``stream`` may follow. The SDK sends EndStream; once the
    engine has finished with every message of the stream it calls
    ``acked`` one last time."""

    stream: str


class Output(NamedTuple):
    """One output a sink receives.

    Attributes:
        key: the output's key (``b""`` when unkeyed).
        payload: the output's bytes.
        event_time: microseconds since the Unix epoch; 0 is unknown.
    """

    key: bytes
    payload: bytes
    event_time: int = 0


class ConfigError(Exception):
    """The configuration does not say how to reach the engine."""


@dataclasses.dataclass(frozen=True)
class ConnectorConfig:
    """How a connector reaches the engine.

    A connector the engine spawns (``program:`` in the topology) needs none:
    ``run_source``/``run_sink`` read :meth:`from_env`. A connector started
    by someone else (``listen:`` and ``token_env:`` in the topology) is
    given one.

    Attributes:
        address: the nng URL the engine listens on, e.g.
            ``tcp://127.0.0.1:7300``.
        token: the value of the engine's ``token_env`` variable.
        program: ``Hello.program``, and the name in log lines.
        instance: ``Hello.instance``.
        max_message_bytes: the largest frame accepted from the engine (the
            topology's ``limits.message_max_bytes``); nng's 4-byte pair1
            header counts against it.
        name: the connector's name in the topology (for log lines).
        spawned: True for a connector the engine started (``from_env`` sets
            it): when the connection is lost it exits with status 1 and the
            engine starts it again. False: it dials again, with backoff.
        reconnect_backoff_min: seconds before the first new dial after a
            lost connection; doubled for each further loss without
            progress.
        reconnect_backoff_max: the cap on that delay, in seconds.
    """

    address: str
    token: str
    program: str = ""
    instance: int = 0
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    name: str = ""
    spawned: bool = False
    reconnect_backoff_min: float = 0.1
    reconnect_backoff_max: float = 5.0

    def __post_init__(self) -> None:
        problems = []
        if not self.address:
            problems.append("address is empty")
        if not self.token:
            problems.append("token is empty")
        if self.instance < 0:
            problems.append(f"instance {self.instance} is negative")
        if self.max_message_bytes < 1024:
            problems.append(f"max_message_bytes {self.max_message_bytes} is under 1024")
        if not 0 < self.reconnect_backoff_min <= self.reconnect_backoff_max:
            problems.append(
                "reconnect_backoff_min must be > 0 and <= reconnect_backoff_max"
            )
        if problems:
            raise ConfigError("invalid ConnectorConfig: " + "; ".join(problems))

    @classmethod
    def from_env(
        cls, role: str, environ: Optional[Mapping[str, str]] = None
    ) -> "ConnectorConfig":
        """Read the variables the engine sets for a spawned connector.

        ``role`` is ``"source"`` or ``"sink"``; when ``WALLAROO_ROLE`` is
        set it must match. Reads ``os.environ`` unless ``environ`` is given.
        Raises :class:`ConfigError` naming every missing or invalid
        variable.
        """
        env = os.environ if environ is None else environ
        required = (
            "WALLAROO_ENGINE_ADDR",
            "WALLAROO_TOKEN",
            "WALLAROO_PROGRAM",
            "WALLAROO_INSTANCE",
        )
        missing = [name for name in required if not env.get(name)]
        if missing:
            raise ConfigError(
                f"missing environment variable{'s' if len(missing) > 1 else ''} "
                f"{', '.join(missing)}: a connector is either started by "
                f"wallaroo-engine (program: in the topology), which sets them, "
                f"or given a ConnectorConfig (listen: in the topology)"
            )
        problems: List[str] = []
        instance = _env_int(env, "WALLAROO_INSTANCE", None, 0, problems)
        max_bytes = _env_int(
            env, "WALLAROO_MAX_MESSAGE_BYTES", DEFAULT_MAX_MESSAGE_BYTES, 1024, problems
        )
        env_role = env.get("WALLAROO_ROLE", "")
        if env_role and env_role != role:
            problems.append(
                f"WALLAROO_ROLE={env_role!r}, but this program is a {role}: "
                f"check the topology"
            )
        if problems:
            raise ConfigError("; ".join(problems))
        return cls(
            address=env["WALLAROO_ENGINE_ADDR"],
            token=env["WALLAROO_TOKEN"],
            program=env["WALLAROO_PROGRAM"],
            instance=instance,
            max_message_bytes=max_bytes,
            name=env.get("WALLAROO_CONNECTOR", ""),
            spawned=True,
        )


def _env_int(
    env: Mapping[str, str],
    name: str,
    default: Optional[int],
    minimum: int,
    problems: List[str],
) -> int:
    text = env.get(name, "")
    if not text and default is not None:
        return default
    try:
        value = int(text, 10)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        problems.append(f"{name}={text!r} is not an integer >= {minimum}")
    return value


class Source(abc.ABC):
    """Base class of a source connector.

    The SDK calls these methods from one thread, never concurrently:
    ``streams`` once at start; ``welcome`` after every Welcome (each
    connection to the engine), before anything else on that connection;
    ``open`` once per stream when the engine has answered its OpenStream;
    then ``poll`` in a loop (only while the engine has granted credits),
    ``acked`` whenever the engine acknowledges, and ``close`` once at the
    end. Override ``streams`` and ``poll``; ``welcome``, ``open``,
    ``acked`` and ``close`` do nothing by default.
    """

    @abc.abstractmethod
    def streams(self) -> Sequence[StreamSpec]:
        """The streams to open at start, names unique. (None at all ends
        the run at once: Goodbye, status 0.)"""

    def welcome(self, initial_credits: int, max_batch_events: int) -> None:
        """The engine accepted this connection: at most ``initial_credits``
        events may be sent before its first Credit (0: none until a
        Credit), and ``max_batch_events`` is the largest ``max_events``
        ``poll`` will be given (the Welcome's value, or the SDK's default
        1024 when the engine leaves it at 0).

        Called after every Welcome, before ``open`` and before any ``poll``
        on that connection; again after a reconnect, whose values may
        differ. Credits come back as the engine finishes events, so the
        engine never holds more than ``initial_credits`` events of this
        connection at once: a source that fetches ahead from its upstream
        (a broker's prefetch) can size that window here."""

    def open(self, stream: str, resume_after: int) -> None:
        """The engine answered for ``stream``: produce messages with ids
        greater than ``resume_after`` (the engine's position, which wins
        over the hint). Called once per stream per run: after a reconnect
        the SDK itself sends again what the engine has not acknowledged."""

    @abc.abstractmethod
    def poll(self, max_events: int, timeout: float) -> Sequence[Union[Message, End]]:
        """Up to ``max_events`` messages (never more), waiting at most
        ``timeout`` seconds for the first; ``[]`` when there is none yet.

        An ``End(stream)`` after a bounded stream's last message says that
        no message of that stream follows (it does not count against
        ``max_events``). A message whose id is not greater than the last
        one sent on its stream (or than ``resume_after``) is already in the
        engine: the SDK does not send it, and a later ``acked`` covers it.
        Keep to ``timeout``: the SDK answers the engine's heartbeats
        between calls.
        """

    def acked(self, stream: str, up_to: int) -> None:
        """Every message of ``stream`` with id <= ``up_to`` is done: it is
        safe to acknowledge them upstream now (and only now). ``up_to``
        increases from one call to the next for a stream."""

    def close(self) -> None:
        """The session is over (every stream ended, the engine said
        Goodbye, SIGTERM, or an error): release resources."""


class Sink(abc.ABC):
    """Base class of a sink connector (at-least-once).

    ``write`` is called once per batch, in the engine's order; the SDK
    answers the batch when it returns. A batch that was delivered but not
    answered (the connector died in between) is delivered again on the
    next connection, so design ``write`` to tolerate duplicates or use
    :class:`TwoPhaseSink`.
    """

    @abc.abstractmethod
    def write(self, epoch: int, outputs: List[Output]) -> None:
        """Deliver ``outputs``; return only once they are delivered
        (durable, published and confirmed). ``epoch`` is the checkpoint
        epoch of the batch (0 until exactly-once). Raise to refuse the
        batch: the engine closes the connection and sends it again on the
        next one."""

    def close(self) -> None:
        """The session is over: release resources."""


class TwoPhaseSink(Sink):
    """A sink that takes part in the engine's two-phase commit.

    Says the ``2pc`` capability in its Hello. ``write`` holds outputs for
    their epoch without making them visible; ``prepare`` makes an epoch
    durable, ``commit`` visible, ``abort`` discards it. After every
    connect the SDK asks ``in_doubt`` for the epochs prepared and not yet
    resolved, and the engine decides each of them. A Commit or Abort from
    an engine incarnation older than the newest seen is ignored.
    """

    @abc.abstractmethod
    def write(self, epoch: int, outputs: List[Output]) -> None:
        """Hold ``outputs`` for ``epoch``, not visible yet. Raise to refuse
        the batch (as for :meth:`Sink.write`)."""

    @abc.abstractmethod
    def prepare(self, epoch: int, incarnation: int) -> None:
        """Make everything held for ``epoch`` durable but not visible, and
        remember ``incarnation`` with it (``in_doubt`` returns it). Raise
        when that is impossible: the engine aborts the epoch."""

    @abc.abstractmethod
    def commit(self, epoch: int) -> None:
        """Make the prepared ``epoch`` visible. Raising gives the
        connection up; the epoch stays in doubt and is decided again after
        the reconnect."""

    @abc.abstractmethod
    def abort(self, epoch: int) -> None:
        """Discard ``epoch``: its outputs will be sent again in a later
        epoch. Raising is handled as for ``commit``."""

    @abc.abstractmethod
    def in_doubt(self) -> List[Tuple[int, int]]:
        """The ``(epoch, incarnation)`` pairs prepared and neither
        committed nor aborted, ``incarnation`` being the one given to
        ``prepare``. Called after every connect."""


def _resolve_config(role: str, config: Optional[ConnectorConfig]) -> Optional[ConnectorConfig]:
    if config is not None:
        if not isinstance(config, ConnectorConfig):
            raise TypeError(
                f"config must be a ConnectorConfig, not {type(config).__name__}"
            )
        return config
    try:
        return ConnectorConfig.from_env(role)
    except ConfigError as exc:
        set_identity(
            os.environ.get("WALLAROO_PROGRAM") or role,
            os.environ.get("WALLAROO_INSTANCE") or "?",
        )
        log(str(exc))
        return None


def run_source(
    source: Source,
    config: Optional[ConnectorConfig] = None,
    *,
    connect_timeout: float = 10.0,
    drain_timeout: float = 3.0,
    poll_timeout: float = 0.1,
    stop: Optional[threading.Event] = None,
) -> int:
    """Serve ``source`` to the engine until the session ends; returns the
    exit status (``sys.exit(run_source(...))``).

    Args:
        source: the source.
        config: how to reach the engine; ``None`` reads the environment of
            a spawned connector (:meth:`ConnectorConfig.from_env`).
        connect_timeout: seconds a spawned connector waits for the
            connection (and any connector for the Welcome) before giving up
            with status 1. An accepted connector waits for the engine as
            long as it takes.
        drain_timeout: on SIGTERM (or ``stop``), the most seconds to wait
            for the engine to acknowledge what was sent, before ``close``
            and Goodbye.
        poll_timeout: the ``timeout`` given to ``poll``; it bounds how late
            a heartbeat or an acknowledgement is handled.
        stop: an event that, once set, stops the session as SIGTERM does
            (for a source run in a thread of a bigger program). SIGTERM,
            and Ctrl-C for a connector given a ``config``, are handled only
            when ``run_source`` runs in the main thread.
    """
    if not isinstance(source, Source):
        raise TypeError(
            f"run_source() takes a wallaroo.connector.Source, not {type(source).__name__}"
        )
    resolved = _resolve_config("source", config)
    if resolved is None:
        return EXIT_USAGE
    from ._source_session import SourceSession

    session = SourceSession(
        source,
        resolved,
        connect_timeout=connect_timeout,
        drain_timeout=drain_timeout,
        poll_timeout=poll_timeout,
        stop=stop,
    )
    return session.run()


def run_sink(
    sink: Sink,
    config: Optional[ConnectorConfig] = None,
    *,
    connect_timeout: float = 10.0,
    stop: Optional[threading.Event] = None,
) -> int:
    """Serve ``sink`` to the engine until the session ends; returns the exit
    status (``sys.exit(run_sink(...))``).

    A :class:`TwoPhaseSink` takes part in two-phase commit. ``config``,
    ``connect_timeout`` and ``stop`` are as for :func:`run_source`; on
    SIGTERM a sink finishes the batch in hand, then closes and says
    Goodbye (unanswered batches are sent again on the next connection).
    """
    if not isinstance(sink, Sink):
        raise TypeError(
            f"run_sink() takes a wallaroo.connector.Sink, not {type(sink).__name__}"
        )
    resolved = _resolve_config("sink", config)
    if resolved is None:
        return EXIT_USAGE
    from ._sink_session import SinkSession

    session = SinkSession(sink, resolved, connect_timeout=connect_timeout, stop=stop)
    return session.run()
