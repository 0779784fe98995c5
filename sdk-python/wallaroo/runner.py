"""The runner loop: serve the steps of a ``Steps`` to the engine.

The engine spawns the runner program with ``WALLAROO_*`` environment
variables; :func:`run` dials the engine over nng pair1 (for ``ipc://``
addresses the SDK speaks nng's ipc framing itself, see ``_ipc.py``), says
Hello, learns which steps to serve (AssignSteps), answers Ready, then
answers every Batch with a BatchReply, in arrival order, until Goodbye.
See protocol/README.md (the wire contract) for the session.

Exit status: 0 after Goodbye (or once the engine has been gone for
``orphan_timeout`` seconds), 1 when a step is missing or the engine cannot
be reached, 2 for a bad environment, a Refuse or an unsupported version.
"""

from __future__ import annotations

import enum
import os
import sys
import threading
import time
from typing import Dict, List, Mapping, NamedTuple, NoReturn, Optional

import pynng
from google.protobuf.message import DecodeError

from . import __version__
from ._ipc import PAIR1_HEADER, IpcPair, LinkLost, path_of
from ._core import encode_reply, fast_reply, plan
from ._log import log, set_identity
from ._pb import wallaroo_pb2 as pb
from .steps import Step, Steps

__all__ = ["run", "serve", "Config", "ConfigError", "config_from_env"]

PROTOCOL_MAJOR = 1
PROTOCOL_MINOR = 0
SDK_CAPABILITY = "sdk:python/" + ".".join(__version__.split(".")[:2])
DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024

EXIT_OK = 0
EXIT_FAILURE = 1  # a step is missing, the engine cannot be reached
EXIT_USAGE = 2  # bad environment, Refuse, unsupported protocol version

# Messages the socket queues each way. The engine bounds the batches in
# flight to a runner (Welcome.max_inflight_batches), so this only has to be
# large enough never to be the limit.
_SOCKET_BUFFER_MESSAGES = 64

# How long to wait, after sending a last Error, for the engine to close the
# connection: closing our socket at once could drop the queued message.
_LINGER_SECONDS = 1.0


class ConfigError(Exception):
    """The environment does not say how to reach the engine."""


class Config(NamedTuple):
    """What the engine tells a runner through its environment."""

    engine_addr: str
    token: str
    program: str
    instance: int
    max_message_bytes: int


def config_from_env(environ: Optional[Mapping[str, str]] = None) -> Config:
    """Read the ``WALLAROO_*`` variables (from ``os.environ`` by default).

    Raises ``ConfigError`` naming every variable that is missing or invalid.
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
            f"{', '.join(missing)}: this program is meant to be started by "
            f"wallaroo-engine"
        )
    problems: List[str] = []
    instance = _env_int(env, "WALLAROO_INSTANCE", None, 0, problems)
    max_bytes = _env_int(
        env, "WALLAROO_MAX_MESSAGE_BYTES", DEFAULT_MAX_MESSAGE_BYTES, 1, problems
    )
    if problems:
        raise ConfigError("; ".join(problems))
    return Config(
        engine_addr=env["WALLAROO_ENGINE_ADDR"],
        token=env["WALLAROO_TOKEN"],
        program=env["WALLAROO_PROGRAM"],
        instance=instance,
        max_message_bytes=max_bytes,
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


def run(
    steps: Steps,
    *,
    connect_timeout: float = 10.0,
    orphan_timeout: float = 5.0,
) -> NoReturn:
    """Serve ``steps`` to the engine that started this process, then exit.

    Reads the ``WALLAROO_*`` environment variables, dials the engine
    (giving up after ``connect_timeout`` seconds), and serves batches until
    the engine says Goodbye or has been gone for ``orphan_timeout`` seconds.
    Never returns: exits the process with the status documented in this
    module (0 after Goodbye).
    """
    status = serve(
        steps, connect_timeout=connect_timeout, orphan_timeout=orphan_timeout
    )
    sys.exit(status)


def serve(
    steps: Steps,
    *,
    environ: Optional[Mapping[str, str]] = None,
    connect_timeout: float = 10.0,
    orphan_timeout: float = 5.0,
) -> int:
    """The body of :func:`run`: returns the exit status instead of exiting.

    ``environ`` replaces ``os.environ`` when given.
    """
    if not isinstance(steps, Steps):
        raise TypeError(f"run() takes a wallaroo.Steps, not {type(steps).__name__}")
    try:
        config = config_from_env(environ)
    except ConfigError as exc:
        env = os.environ if environ is None else environ
        set_identity(env.get("WALLAROO_PROGRAM") or "?", env.get("WALLAROO_INSTANCE") or "?")
        log(str(exc))
        return EXIT_USAGE
    set_identity(config.program, str(config.instance))
    session = _Session(steps, config, orphan_timeout)
    try:
        return session.run(connect_timeout)
    finally:
        session.close()


class _State(enum.Enum):
    """Where a session is; advanced only by ``_Session.run``."""

    WAIT_WELCOME = "waiting for Welcome"  # Hello sent
    WAIT_ASSIGN = "waiting for AssignSteps"  # Welcome received
    SERVING = "serving batches"  # Ready sent


class _Finished(Exception):
    """Ends the session with an exit status."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class _Session:
    """One connection to the engine, from dial to exit."""

    def __init__(self, steps: Steps, config: Config, orphan_timeout: float) -> None:
        self.steps = steps
        self.config = config
        self.orphan_timeout = orphan_timeout
        self.state = _State.WAIT_WELCOME
        self.by_id: Dict[int, Step] = {}
        # What fast_reply needs of each assigned step, by step id; empty
        # (nothing for it to do) until AssignSteps.
        self.plans: Dict[int, tuple] = {}
        self.max_send = config.max_message_bytes
        # Connection tracking, written by nng's pipe callbacks (other threads).
        self._lock = threading.Lock()
        self._pipes = 0
        self._connected = threading.Event()  # set once, at the first connection
        self._disconnected = threading.Event()
        self._gone_since: Optional[float] = None
        self._ever_connected = False
        self._dialer: Optional[pynng.Dialer] = None
        # ipc:// addresses are spoken directly over a unix socket (see
        # _ipc.py): no nng thread between this one and the engine.
        # WALLAROO_SDK_NNG_IPC=1 keeps pynng's transport, for A/B runs.
        path = path_of(config.engine_addr)
        self.ipc: Optional[IpcPair] = None
        self.sock: Optional[pynng.Pair1] = None
        if path is not None and os.environ.get("WALLAROO_SDK_NNG_IPC") != "1":
            self.ipc = IpcPair(path, config.max_message_bytes)
            return
        self.sock = pynng.Pair1(
            recv_max_size=config.max_message_bytes,
            recv_buffer_size=_SOCKET_BUFFER_MESSAGES,
            send_buffer_size=_SOCKET_BUFFER_MESSAGES,
            # Wake up now and then to notice that the engine went away.
            recv_timeout=max(10, int(min(orphan_timeout, 1.0) * 250)),
            send_timeout=max(10, int(min(orphan_timeout, 1.0) * 250)),
            reconnect_time_min=20,
            reconnect_time_max=500,
        )
        self.sock.add_pre_pipe_connect_cb(self._on_pre_connect)
        self.sock.add_post_pipe_connect_cb(self._on_connect)
        self.sock.add_post_pipe_remove_cb(self._on_remove)

    # -- connection tracking (called on nng threads) --

    def _on_pre_connect(self, pipe: pynng.Pipe) -> None:
        # A session lives on one connection: once it is lost, the dialer must
        # not connect again. The engine respawns runners, and an old runner
        # reconnecting could take the pair1 slot meant for its replacement.
        with self._lock:
            refuse = self._ever_connected
        if refuse:
            pipe.close()

    def _on_connect(self, pipe: pynng.Pipe) -> None:
        with self._lock:
            self._ever_connected = True
            self._pipes += 1
            self._disconnected.clear()
            self._connected.set()

    def _on_remove(self, pipe: pynng.Pipe) -> None:
        with self._lock:
            self._pipes -= 1
            if self._pipes <= 0:
                self._pipes = 0
                self._gone_since = time.monotonic()
                self._disconnected.set()

    def _check_engine(self) -> None:
        """Called when idle: end the session once the engine has been gone
        for ``orphan_timeout`` seconds."""
        with self._lock:
            gone_since = self._gone_since
        if gone_since is None:
            return
        if self._dialer is not None:
            # Stop redialing (every attempt would be refused, see above).
            log("lost the connection to the engine")
            self._dialer.close()
            self._dialer = None
        if time.monotonic() - gone_since >= self.orphan_timeout:
            log(f"the engine has been gone for {self.orphan_timeout:g} s; exiting")
            raise _Finished(EXIT_OK)

    # -- sending --

    def _send(self, frame: pb.Frame) -> None:
        self._send_bytes(frame.SerializeToString())

    def _orphaned(self, reason: str) -> NoReturn:
        """The unix socket to the engine is gone (it never comes back):
        leave once the engine has been gone for ``orphan_timeout``, as
        over nng."""
        log(f"lost the connection to the engine: {reason}")
        time.sleep(self.orphan_timeout)
        log(f"the engine has been gone for {self.orphan_timeout:g} s; exiting")
        raise _Finished(EXIT_OK)

    def _send_bytes(self, data: bytes) -> None:
        if self.ipc is not None:
            try:
                self.ipc.send(data)
            except LinkLost as exc:
                self._orphaned(exc.reason)
            return
        assert self.sock is not None
        while True:
            try:
                self.sock.send(data)
                return
            except pynng.Timeout:
                # The engine is not reading (busy) or is gone.
                self._check_engine()

    def _send_error(self, code: int, message: str, batch_id: int = 0) -> None:
        frame = pb.Frame()
        frame.error.code = code
        frame.error.message = message
        frame.error.batch_id = batch_id
        self._send(frame)

    def _send_hello(self) -> None:
        frame = pb.Frame()
        hello = frame.hello
        hello.version_major = PROTOCOL_MAJOR
        hello.version_minor = PROTOCOL_MINOR
        hello.role = pb.ROLE_RUNNER
        hello.program = self.config.program
        hello.token = self.config.token
        hello.instance = self.config.instance
        hello.pid = os.getpid()
        hello.capabilities.append(SDK_CAPABILITY)
        hello.capabilities.append("steps:" + ",".join(self.steps.names()))
        self._send(frame)

    def _linger(self) -> None:
        """Give a last message time to leave: wait (briefly) for the engine
        to close the connection."""
        if self.ipc is not None:
            self.ipc.wait_closed(_LINGER_SECONDS)
            return
        self._disconnected.wait(_LINGER_SECONDS)

    # -- the session --

    def run(self, connect_timeout: float) -> int:
        if self.ipc is not None:
            return self._run_ipc(connect_timeout)
        assert self.sock is not None
        addr = self.config.engine_addr
        try:
            self._dialer = self.sock.dial(addr, block=False)
        except pynng.NNGException as exc:
            log(f"WALLAROO_ENGINE_ADDR={addr!r} cannot be dialed: {exc}")
            return EXIT_USAGE
        if not self._connected.wait(connect_timeout):
            log(f"could not connect to the engine at {addr} within {connect_timeout:g} s")
            return EXIT_FAILURE
        try:
            self._send_hello()
            while True:
                try:
                    # recv_msg, not recv: pynng's recv fails on an empty message.
                    data = self.sock.recv_msg().bytes
                except pynng.Timeout:
                    self._check_engine()
                    continue
                self._on_message(data)
        except _Finished as fin:
            return fin.status
        except pynng.Closed:
            return EXIT_OK

    def _run_ipc(self, connect_timeout: float) -> int:
        assert self.ipc is not None
        addr = self.config.engine_addr
        try:
            if not self.ipc.connect(connect_timeout):
                log(f"could not connect to the engine at {addr} within {connect_timeout:g} s")
                return EXIT_FAILURE
        except LinkLost as exc:
            log(f"could not connect to the engine at {addr}: {exc.reason}")
            return EXIT_FAILURE
        try:
            self._send_hello()
            recv = self.ipc.recv
            while True:
                try:
                    data = recv()
                except LinkLost as exc:
                    self._orphaned(exc.reason)
                self._on_message(data)
        except _Finished as fin:
            return fin.status

    def close(self) -> None:
        if self.ipc is not None:
            self.ipc.close()
        if self.sock is not None:
            self.sock.close()

    def _on_message(self, data: bytes) -> None:
        if fast_reply is not None and self.plans:
            # Batches, the common case, in C when it is built; None is
            # anything else (another frame, a state step whose user code
            # failed, ...), which the Python path below then handles.
            try:
                reply = fast_reply(data, self.plans)
            except Exception as exc:  # a bug in the SDK: user errors never get here
                log(f"internal error in the C path: {type(exc).__name__}: {exc}")
                reply = None
            # An oversized reply goes the Python way too, which reports it.
            if reply is not None and len(reply) + PAIR1_HEADER <= self.max_send:
                self._send_bytes(reply)
                return
        frame = pb.Frame()
        try:
            frame.ParseFromString(data)
        except DecodeError as exc:
            log(f"undecodable frame of {len(data)} bytes: {exc}")
            self._send_error(
                pb.ERROR_CODE_BAD_FRAME, f"undecodable frame of {len(data)} bytes: {exc}"
            )
            return
        body = frame.WhichOneof("body")
        state = self.state
        if body == "batch" and state is _State.SERVING:
            self._on_batch(frame.batch)
        elif body == "heartbeat":
            if frame.heartbeat.reply:
                out = pb.Frame()
                out.heartbeat.seq = frame.heartbeat.seq
                self._send(out)
        elif body == "goodbye":
            log(f"the engine said goodbye ({frame.goodbye.reason or 'no reason'})")
            raise _Finished(EXIT_OK)
        elif body == "refuse":
            log(
                f"the engine refused this runner: "
                f"{_code_name(frame.refuse.code)}: {frame.refuse.message}"
            )
            raise _Finished(EXIT_USAGE)
        elif body == "welcome" and state is _State.WAIT_WELCOME:
            self._on_welcome(frame.welcome)
        elif body == "assign" and state is not _State.WAIT_WELCOME:
            self._on_assign(frame.assign)
        elif body == "error":
            err = frame.error
            log(
                f"the engine reported an error: {_code_name(err.code)}: {err.message}"
                + (f" (batch {err.batch_id})" if err.batch_id else "")
            )
        else:
            what = body or "empty (or of a newer protocol)"
            log(f"unexpected {what} frame while {state.value}")
            self._send_error(
                pb.ERROR_CODE_BAD_FRAME, f"unexpected {what} frame while {state.value}"
            )

    def _on_welcome(self, welcome: pb.Welcome) -> None:
        if welcome.version_major != PROTOCOL_MAJOR:
            message = (
                f"protocol version {welcome.version_major}.{welcome.version_minor} "
                f"is not supported; this SDK speaks {PROTOCOL_MAJOR}.{PROTOCOL_MINOR}"
            )
            log(message)
            frame = pb.Frame()
            frame.refuse.code = pb.ERROR_CODE_BAD_VERSION
            frame.refuse.message = message
            self._send(frame)
            self._linger()
            raise _Finished(EXIT_USAGE)
        if welcome.max_message_bytes:
            self.max_send = min(self.config.max_message_bytes, welcome.max_message_bytes)
        log(
            f"welcomed by worker {welcome.worker!r} "
            f"(protocol {welcome.version_major}.{welcome.version_minor}, "
            f"incarnation {welcome.incarnation})"
        )
        self.state = _State.WAIT_ASSIGN

    def _on_assign(self, assign: pb.AssignSteps) -> None:
        by_id: Dict[int, Step] = {}
        serving: List[str] = []
        problems: List[str] = []
        for spec in assign.steps:
            function = spec.function or spec.name
            if function not in self.steps:
                problems.append(
                    f"no step function {function!r} (for step {spec.name!r})"
                )
                continue
            step = self.steps.get(function)
            if spec.kind != pb.STEP_KIND_UNSPECIFIED and spec.kind != step.wire_kind:
                problems.append(
                    f"step function {function!r} is registered as a {step.kind} "
                    f"but step {spec.name!r} is assigned as "
                    f"{_kind_name(spec.kind)}"
                )
                continue
            by_id[spec.step_id] = step
            serving.append(
                repr(spec.name) if function == spec.name else f"{spec.name!r} ({function})"
            )
        if problems:
            registered = ", ".join(repr(n) for n in self.steps.names()) or "none"
            message = (
                f"runner program {self.config.program!r}: "
                + "; ".join(problems)
                + f"; registered: {registered}"
            )
            log(message)
            self._send_error(pb.ERROR_CODE_UNKNOWN_STEP, message)
            self._linger()
            raise _Finished(EXIT_FAILURE)
        self.by_id = by_id
        self.plans = {step_id: plan(step) for step_id, step in by_id.items()}
        frame = pb.Frame()
        frame.ready.SetInParent()
        self._send(frame)
        self.state = _State.SERVING
        log("ready, serving " + (", ".join(serving) or "no step"))

    def _on_batch(self, batch: pb.Batch) -> None:
        step = self.by_id.get(batch.step_id)
        if step is None:
            self._send_error(
                pb.ERROR_CODE_UNKNOWN_STEP,
                f"step id {batch.step_id} was not assigned to this runner",
                batch.batch_id,
            )
            return
        try:
            data = encode_reply(step, batch)
        except Exception as exc:  # a bug in the SDK: user errors never get here
            log(f"internal error on batch {batch.batch_id}: {type(exc).__name__}: {exc}")
            self._send_error(
                pb.ERROR_CODE_INTERNAL,
                f"runner failed on batch {batch.batch_id}: {type(exc).__name__}: {exc}",
                batch.batch_id,
            )
            return
        # nng's pair1 counts its 4-byte header against the receiver's limit.
        if len(data) + PAIR1_HEADER > self.max_send:
            message = (
                f"the reply to batch {batch.batch_id} is {len(data)} bytes, "
                f"over the limit of {self.max_send - PAIR1_HEADER} "
                f"(message_max_bytes={self.max_send} less the "
                f"{PAIR1_HEADER}-byte pair1 header)"
            )
            log(message)
            self._send_error(pb.ERROR_CODE_TOO_LARGE, message, batch.batch_id)
            return
        self._send_bytes(data)


def _code_name(code: int) -> str:
    try:
        return pb.ErrorCode.Name(code)
    except ValueError:
        return str(code)


def _kind_name(kind: int) -> str:
    try:
        return pb.StepKind.Name(kind)
    except ValueError:
        return str(kind)
