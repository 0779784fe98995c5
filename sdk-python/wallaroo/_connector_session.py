"""What source and sink sessions share: dialing, the handshake, heartbeats
both ways, Goodbye, Reconnect, reconnecting with backoff, SIGTERM.

A connector run is one :class:`Session` object that lives across
connections. :meth:`Session.run` dials, says Hello, and then loops: read
every queued frame, do the housekeeping (heartbeats, stop request), let the
role do its work (a source polls and sends; a sink has nothing to do
between batches), and wait for the next frame when there was nothing to
do. When the connection is lost, an accepted connector dials again after a
backoff; a spawned one exits with status 1 so that the engine restarts it.

Subclasses (``_source_session.SourceSession``,
``_sink_session.SinkSession``) implement the hooks at the end of the class.
"""

from __future__ import annotations

import enum
import os
import signal
import threading
import time
import traceback
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional

import pynng
from google.protobuf.message import DecodeError

from . import __version__
from ._connector_link import ConnectionLost, Link
from ._log import log, set_identity
from ._pb import wallaroo_pb2 as pb

if TYPE_CHECKING:
    from .connector import ConnectorConfig

PROTOCOL_MAJOR = 1
PROTOCOL_MINOR = 0
SDK_CAPABILITY = "sdk:python/" + ".".join(__version__.split(".")[:2])

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_REFUSED = 3

# Defaults for Welcome fields the engine leaves at 0.
DEFAULT_HEARTBEAT_INTERVAL = 1.0
DEFAULT_HEARTBEAT_TIMEOUT = 5.0
DEFAULT_MAX_BATCH_EVENTS = 1024

# The longest the loop waits without looking at the stop flag and the
# heartbeat timers. Python runs signal handlers only between bytecodes, so
# this also bounds how late a SIGTERM is noticed.
TICK = 0.1

# How long to let a last message (Goodbye, Error) leave before closing.
_GOODBYE_LINGER = 0.2
_ERROR_LINGER = 1.0


class SessionEnd(Exception):
    """Ends the whole run with an exit status."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class Redirect(Exception):
    """The engine sent Reconnect: dial ``address`` instead."""

    def __init__(self, address: str, reason: str) -> None:
        super().__init__(address)
        self.address = address
        self.reason = reason


class UserCodeError(Exception):
    """The connector's own code raised, or broke the API contract."""


class Phase(enum.Enum):
    """Where one connection is; advanced by ``Session`` and the hooks."""

    CONNECTING = "connecting"  # dialing, nothing sent
    WAIT_WELCOME = "waiting for Welcome"  # Hello sent
    STARTING = "starting"  # Welcome received; the role is setting up (streams)
    OPEN = "open"  # the role's steady state


def code_name(code: int) -> str:
    """``ERROR_CODE_BAD_TOKEN`` for 3; the number when unknown."""
    try:
        return pb.ErrorCode.Name(code)
    except ValueError:
        return str(code)


def call_user(what: str, fn: Callable[..., Any], *args: Any) -> Any:
    """Call the connector's code; wrap what it raises in ``UserCodeError``."""
    try:
        return fn(*args)
    except Exception as exc:
        raise UserCodeError(
            f"{what} raised {type(exc).__name__}: {exc}\n{traceback.format_exc()}"
        ) from exc


class Session:
    """A connector's run: every connection, from the first dial to the exit."""

    role = pb.ROLE_UNSPECIFIED
    role_name = "connector"

    def __init__(
        self,
        user: Any,
        config: "ConnectorConfig",
        *,
        connect_timeout: float,
        stop: Optional[threading.Event],
    ) -> None:
        self.user = user
        self.config = config
        self.connect_timeout = connect_timeout
        self.stop_event = stop if stop is not None else threading.Event()
        self.stopping = False
        self.user_closed = False
        self.link: Optional[Link] = None
        self.phase = Phase.CONNECTING
        self.failures = 0  # consecutive connections lost without progress
        self.max_send = config.max_message_bytes
        self.welcome = pb.Welcome()
        self.heartbeat_interval = DEFAULT_HEARTBEAT_INTERVAL
        self.heartbeat_timeout = DEFAULT_HEARTBEAT_TIMEOUT
        self.last_received = 0.0
        self.heartbeat_seq = 0
        self.heartbeat_sent_at: Optional[float] = None  # ours, unanswered

    # -- the run --

    def run(self) -> int:
        """Serve until the session ends; returns the exit status."""
        set_identity(
            self.config.program or self.config.name or self.role_name,
            str(self.config.instance),
        )
        previous = self._install_sigterm()
        try:
            try:
                self.start()
                return self._run()
            except UserCodeError as exc:
                log(f"{self.role_name} failed: {exc}".rstrip())
                self._send_quietly_error(pb.ERROR_CODE_INTERNAL, str(exc).splitlines()[0])
                return EXIT_FAILURE
        finally:
            if self.link is not None:
                self.link.close()
                self.link = None
            self.close_user()
            self._restore_sigterm(previous)

    def _install_sigterm(self) -> Dict[int, Any]:
        """SIGTERM stops the session. So does Ctrl-C (SIGINT) for a
        connector the operator started, unless the program handles SIGINT
        itself; a second Ctrl-C interrupts at once."""
        if threading.current_thread() is not threading.main_thread():
            return {}  # signals are the embedding program's business
        stop = self.stop_event

        def on_sigterm(signum: int, frame: Any) -> None:
            stop.set()

        def on_sigint(signum: int, frame: Any) -> None:
            if stop.is_set():
                raise KeyboardInterrupt
            stop.set()

        previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, on_sigterm)}
        if not self.config.spawned and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            previous[signal.SIGINT] = signal.signal(signal.SIGINT, on_sigint)
        return previous

    @staticmethod
    def _restore_sigterm(previous: Dict[int, Any]) -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    def _run(self) -> int:
        address = self.config.address
        while True:
            try:
                self._connection(address)
            except SessionEnd as end:
                return end.status
            except Redirect as redirect:
                log(
                    f"the engine asked to reconnect to {redirect.address} "
                    f"({redirect.reason or 'no reason'})"
                )
                address = redirect.address
                self._lost()
                continue
            except ConnectionLost as lost:
                self._lost()
                if self.stopping or self.stop_event.is_set():
                    log(f"stopping: {lost.reason}")
                    return EXIT_OK
                if self.config.spawned:
                    log(
                        f"{lost.reason}; exiting so that the engine starts "
                        f"this {self.role_name} again"
                    )
                    return EXIT_FAILURE
                self.failures += 1
                delay = min(
                    self.config.reconnect_backoff_max,
                    self.config.reconnect_backoff_min * 2 ** (self.failures - 1),
                )
                log(f"{lost.reason}; reconnecting to {address} in {delay:.3g} s")
                if self.stop_event.wait(delay):
                    log("stopping while disconnected")
                    return EXIT_OK

    def _lost(self) -> None:
        if self.link is not None:
            self.link.close()
            self.link = None
        self.phase = Phase.CONNECTING
        self.heartbeat_sent_at = None
        self.on_disconnect()

    def _connection(self, address: str) -> None:
        try:
            link = Link(
                address,
                self.config.max_message_bytes,
                self.config.reconnect_backoff_min,
                self.config.reconnect_backoff_max,
            )
        except pynng.NNGException as exc:
            log(f"cannot dial {address!r}: {exc}")
            raise SessionEnd(EXIT_USAGE) from None
        self.link = link
        self.phase = Phase.CONNECTING
        self._wait_connected(link)
        self.max_send = self.config.max_message_bytes
        self.send_hello()
        self.phase = Phase.WAIT_WELCOME
        self.last_received = time.monotonic()
        welcome_deadline = self.last_received + max(self.connect_timeout, 1.0)
        while True:
            self._drain()
            now = time.monotonic()
            if self.phase is Phase.WAIT_WELCOME and now >= welcome_deadline:
                raise ConnectionLost(
                    f"no Welcome from the engine within {self.connect_timeout:g} s"
                )
            self._heartbeats(now)
            if self.stop_event.is_set() and not self.stopping:
                self.stopping = True
                self._on_stop()
            if not self.work():
                link.wait_readable(TICK)

    def _wait_connected(self, link: Link) -> None:
        started = time.monotonic()
        logged = False
        while not link.wait_connected(TICK):
            if self.stop_event.is_set():
                log("stopping before the engine could be reached")
                raise SessionEnd(EXIT_OK)
            waited = time.monotonic() - started
            if self.config.spawned and waited >= self.connect_timeout:
                raise ConnectionLost(
                    f"could not connect to the engine at {link.address} "
                    f"within {self.connect_timeout:g} s"
                )
            if not logged and waited >= 1.0:
                log(f"waiting for the engine at {link.address}")
                logged = True
        log(f"connected to the engine at {link.address}")

    def _drain(self) -> None:
        link = self.link
        assert link is not None
        while True:
            data = link.recv_nowait()
            if data is None:
                return
            self.last_received = time.monotonic()
            self._on_message(data)

    def _heartbeats(self, now: float) -> None:
        """Ask the engine for a heartbeat when it has been quiet, and give
        the connection up when it does not answer."""
        if self.phase in (Phase.CONNECTING, Phase.WAIT_WELCOME):
            return
        if self.heartbeat_sent_at is not None:
            if now - self.heartbeat_sent_at >= self.heartbeat_timeout:
                raise ConnectionLost(
                    f"the engine did not answer heartbeat {self.heartbeat_seq} "
                    f"within {self.heartbeat_timeout:g} s"
                )
        elif now - self.last_received >= self.heartbeat_interval:
            self.heartbeat_seq += 1
            self.heartbeat_sent_at = now
            frame = pb.Frame()
            frame.heartbeat.seq = self.heartbeat_seq
            frame.heartbeat.reply = True
            self.send(frame)

    def _on_stop(self) -> None:
        if self.phase in (Phase.CONNECTING, Phase.WAIT_WELCOME):
            log("stopping before the session started")
            self.finish("stopped before the session started")
        log("stop requested (SIGTERM, Ctrl-C or the stop event)")
        self.on_stop()

    # -- frames --

    def _on_message(self, data: bytes) -> None:
        frame = pb.Frame()
        try:
            frame.ParseFromString(data)
        except DecodeError as exc:
            self.bad_frame(f"undecodable frame of {len(data)} bytes: {exc}")
            return
        body = frame.WhichOneof("body")
        if body is None:
            self.bad_frame(
                f"frame of {len(data)} bytes with no body (empty, or of a newer protocol)"
            )
            return
        msg = getattr(frame, body)
        if body == "heartbeat":
            self._on_heartbeat(msg)
        elif body == "goodbye":
            log(f"the engine said goodbye ({msg.reason or 'no reason'})")
            self.close_user()
            raise SessionEnd(EXIT_OK)
        elif body == "error":
            log(
                f"the engine reported an error: {code_name(msg.code)}: {msg.message}"
                + (f" (batch {msg.batch_id})" if msg.batch_id else "")
            )
        elif self.phase is Phase.WAIT_WELCOME:
            if body == "refuse":
                log(
                    f"the engine refused this {self.role_name}: "
                    f"{code_name(msg.code)}: {msg.message}"
                    + self._refuse_hint(msg.code)
                )
                raise SessionEnd(EXIT_REFUSED)
            if body == "welcome":
                self._on_welcome(msg)
                return
            self.bad_frame(f"{body} not allowed while {self.phase.value}")
        elif body == "reconnect":
            if not msg.address:
                self.bad_frame("reconnect without an address")
                return
            raise Redirect(msg.address, msg.reason)
        elif not self.on_frame(body, msg):
            self.bad_frame(f"{body} not allowed while {self.phase.value}")

    def _refuse_hint(self, code: int) -> str:
        if code == pb.ERROR_CODE_BAD_TOKEN:
            if self.config.spawned:
                return " (the token comes from WALLAROO_TOKEN)"
            return (
                " (check the token given to this connector against the "
                "engine's token_env variable)"
            )
        return ""

    def _on_heartbeat(self, hb: pb.Heartbeat) -> None:
        if hb.reply:
            frame = pb.Frame()
            frame.heartbeat.seq = hb.seq
            self.send(frame)
        elif self.heartbeat_sent_at is not None and hb.seq == self.heartbeat_seq:
            self.heartbeat_sent_at = None

    def _on_welcome(self, welcome: pb.Welcome) -> None:
        if welcome.version_major != PROTOCOL_MAJOR:
            message = (
                f"protocol version {welcome.version_major}.{welcome.version_minor} "
                f"is not supported; this SDK speaks {PROTOCOL_MAJOR}.{PROTOCOL_MINOR}"
            )
            log(message)
            self.send_error(pb.ERROR_CODE_BAD_VERSION, message)
            assert self.link is not None
            self.link.linger(_ERROR_LINGER)
            raise SessionEnd(EXIT_USAGE)
        self.welcome = welcome
        if welcome.max_message_bytes:
            self.max_send = min(self.config.max_message_bytes, welcome.max_message_bytes)
        self.heartbeat_interval = (
            welcome.heartbeat_interval_ms / 1000.0 or DEFAULT_HEARTBEAT_INTERVAL
        )
        self.heartbeat_timeout = (
            welcome.heartbeat_timeout_ms / 1000.0 or DEFAULT_HEARTBEAT_TIMEOUT
        )
        log(
            f"welcomed by worker {welcome.worker!r} "
            f"(protocol {welcome.version_major}.{welcome.version_minor}, "
            f"incarnation {welcome.incarnation})"
        )
        self.phase = Phase.STARTING
        self.on_welcome(welcome)

    # -- sending --

    def send(self, frame: pb.Frame) -> None:
        """Send one frame; raises ``ConnectionLost`` if the engine is gone."""
        assert self.link is not None
        self.link.send(frame.SerializeToString())

    def send_error(self, code: int, message: str, batch_id: int = 0) -> None:
        frame = pb.Frame()
        frame.error.code = code
        frame.error.message = message[:2000]
        frame.error.batch_id = batch_id
        self.send(frame)

    def _send_quietly_error(self, code: int, message: str) -> None:
        """A last Error on the way out, if there is still a connection."""
        link = self.link
        # Before Welcome an Error would itself break the protocol.
        if link is None or link.gone or self.phase in (Phase.CONNECTING, Phase.WAIT_WELCOME):
            return
        try:
            self.send_error(code, message)
            link.linger(_GOODBYE_LINGER)
        except ConnectionLost:
            pass

    def bad_frame(self, message: str) -> None:
        """Log a frame the engine should not have sent; tell it BAD_FRAME."""
        log(f"protocol error from the engine: {message}")
        self.send_error(pb.ERROR_CODE_BAD_FRAME, message)

    def send_hello(self) -> None:
        frame = pb.Frame()
        hello = frame.hello
        hello.version_major = PROTOCOL_MAJOR
        hello.version_minor = PROTOCOL_MINOR
        hello.role = self.role
        hello.program = self.config.program
        hello.token = self.config.token
        hello.instance = self.config.instance
        hello.pid = os.getpid()
        hello.capabilities.extend(self.capabilities())
        self.send(frame)

    def finish(self, reason: str) -> None:
        """End the run cleanly: close the user's object, Goodbye, exit 0."""
        self.close_user()
        frame = pb.Frame()
        frame.goodbye.reason = reason
        try:
            self.send(frame)
            assert self.link is not None
            self.link.linger(_GOODBYE_LINGER)
        except ConnectionLost:
            pass
        log(f"said goodbye ({reason})")
        raise SessionEnd(EXIT_OK)

    def fail(self, code: int, message: str, batch_id: int = 0) -> None:
        """Report a failure to the engine and give this connection up (the
        engine closes it after such an Error; a reconnect starts afresh)."""
        log(message)
        try:
            self.send_error(code, message, batch_id)
            assert self.link is not None
            self.link.linger(_ERROR_LINGER)
        except ConnectionLost:
            pass
        raise ConnectionLost("gave the connection up after an error")

    def close_user(self) -> None:
        """Call the user's ``close()`` once; log what it raises."""
        if self.user_closed:
            return
        self.user_closed = True
        try:
            self.user.close()
        except Exception as exc:
            log(f"{type(self.user).__name__}.close() raised {type(exc).__name__}: {exc}")

    def progress(self) -> None:
        """The engine took something: reset the reconnect backoff."""
        self.failures = 0

    # -- hooks for the roles --

    def start(self) -> None:
        """Before the first dial (a source asks for its streams here)."""

    def capabilities(self) -> List[str]:
        """``Hello.capabilities``."""
        return [SDK_CAPABILITY]

    def on_welcome(self, welcome: pb.Welcome) -> None:
        """After an accepted Welcome: the role's first frames."""
        self.phase = Phase.OPEN

    def on_frame(self, body: str, msg: Any) -> bool:
        """A frame after Welcome; return False when it is not allowed."""
        return False

    def work(self) -> bool:
        """Do the role's work; return False when there was none to do."""
        return False

    def on_stop(self) -> None:
        """A stop was requested (SIGTERM) and the session is past Welcome."""
        self.finish("stopped")

    def on_disconnect(self) -> None:
        """The connection is gone: forget what belonged to it."""
