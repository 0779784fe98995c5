"""A strict fake engine for connector tests.

``FakeEngine`` is the engine side of connector sessions (protocol/README.md,
section 6): a real pynng Pair1 listener on an ``ipc://`` address, driven
step by step by a test. Every frame it receives is checked against the
protocol before the test sees it, and a broken rule fails the test with
``ProtocolViolation``: the first frame is a Hello with the right role and
version; a source sends only with credits (the fake engine counts them),
on streams it opened and the engine answered, with ids that increase per
stream name (across connections: the engine's positions survive a
reconnect) and with no event after EndStream; a sink answers batches in
the order they were sent, answers only the Prepare, Commit and Abort it
was sent (a stale Commit or Abort must not be answered), and a 2PC sink's
first frame after Welcome is InDoubt; nothing follows a Goodbye.

Heartbeats the connector asks for are answered automatically (and
counted) unless ``answer_heartbeats`` is False. ``barrier()`` sends a
heartbeat and returns the frames that came before its answer: the
connector is single-threaded and sends in order, so this proves what it
did (or did not) send before it saw the barrier, without sleeping.

Also used by the connectors' own tests (connectors/*/tests).
"""

from __future__ import annotations

import collections
import os
import select
import signal
import subprocess
import sys
import threading
import time
from typing import Dict, List, Optional, Tuple

import pynng

from wallaroo._pb import wallaroo_pb2 as pb

SDK_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEADLINE = 5.0  # seconds; generous, only reached when something is broken
TOKEN = "c0ffee"

SOURCE_FRAMES = {"open_stream", "batch", "end_stream", "heartbeat", "error", "goodbye"}
SINK_FRAMES = {"reply", "prepared", "resolved", "heartbeat", "error", "goodbye"}


class ProtocolViolation(AssertionError):
    """The connector broke a rule of the protocol."""


class FakeEngine:
    """The engine side of a source or sink connection (one at a time)."""

    def __init__(
        self,
        directory: str,
        role: int,
        *,
        name: str = "engine",
        token: str = TOKEN,
        incarnation: int = 7,
    ) -> None:
        self.addr = f"ipc://{directory}/{name}.sock"
        self.role = role
        self.token = token
        self.incarnation = incarnation
        self.answer_heartbeats = True
        self.connector_heartbeats = 0  # heartbeats the connector asked for
        self.positions: Dict[str, int] = {}  # name -> highest accepted id
        self.hellos: List[pb.Hello] = []
        self._cond = threading.Condition()
        self._gone_pipes: set = set()  # closed, by either side
        self._connects = 0
        self._removes = 0
        self.sock = pynng.Pair1(
            recv_timeout=int(DEADLINE * 1000), send_timeout=int(DEADLINE * 1000)
        )
        self.sock.add_post_pipe_connect_cb(self._on_connect)
        self.sock.add_post_pipe_remove_cb(self._on_remove)
        self.sock.listen(self.addr)
        self.pipe: Optional[pynng.Pipe] = None
        self._dead_pipes: set = set()  # dropped by the test
        self._heartbeat_seq = 1000
        self._reset()

    # -- connections --

    def _on_connect(self, pipe: pynng.Pipe) -> None:
        with self._cond:
            self._connects += 1
            self._cond.notify_all()

    def _on_remove(self, pipe: pynng.Pipe) -> None:
        with self._cond:
            self._removes += 1
            self._gone_pipes.add(pipe.id)
            self._cond.notify_all()

    def wait_disconnected(self, timeout: float = DEADLINE) -> None:
        """Wait until no connector is connected."""
        with self._cond:
            ok = self._cond.wait_for(lambda: self._removes >= self._connects, timeout)
        assert ok, "the connector did not disconnect"

    def drop(self) -> None:
        """Close the current connection, as a crashed engine would."""
        assert self.pipe is not None
        self._dead_pipes.add(self.pipe.id)
        self.pipe.close()
        self.pipe = None

    def _reset(self) -> None:
        self.state = "hello"
        self.credits = 0
        self.streams: Dict[int, str] = {}  # stream_id -> name, opened by the connector
        self.answered: set = set()  # stream ids the engine answered
        self.ended: Dict[int, int] = {}  # stream_id -> EndStream.last_id
        self.last_batch_id = 0
        self.inflight: collections.deque = collections.deque()  # sink batch ids
        self.next_batch_id = 0
        self.prepares: set = set()
        self.resolves: set = set()  # (epoch, committed) expected
        self.asked: set = set()  # heartbeat seqs the engine asked
        self.two_pc = False

    # -- sending --

    def send(self, **body) -> None:
        """Send one frame: ``send(credit=pb.Credit(events=3))``."""
        ((name, message),) = body.items()
        frame = pb.Frame()
        getattr(frame, name).CopyFrom(message)
        self._sent(name, message)
        self._send_bytes(frame.SerializeToString())

    def send_raw(self, data: bytes) -> None:
        """Send bytes that need not be a Frame."""
        self._send_bytes(data)

    def _send_bytes(self, data: bytes) -> None:
        if self.pipe is not None:
            self.pipe.send(data)
        else:
            self.sock.send(data)

    def _sent(self, name: str, m) -> None:
        if name == "welcome":
            self.credits = m.initial_credits
            self.state = "in-doubt" if self.two_pc else "open"
        elif name == "stream_opened":
            self.answered.add(m.stream_id)
        elif name == "credit":
            self.credits += m.events
        elif name == "stream_ended":
            self.streams.pop(m.stream_id, None)
            self.answered.discard(m.stream_id)
            self.ended.pop(m.stream_id, None)
        elif name == "batch":
            self.inflight.append(m.batch_id)
        elif name == "prepare":
            self.prepares.add(m.epoch)
        elif name in ("commit", "abort"):
            if m.incarnation >= self.incarnation:
                self.resolves.add((m.epoch, name == "commit"))
        elif name == "heartbeat" and m.reply:
            self.asked.add(m.seq)

    # -- receiving --

    def recv(self, timeout: float = DEADLINE) -> pb.Frame:
        """The next frame from the connector, checked. Raises pynng.Timeout."""
        self.sock.recv_timeout = int(timeout * 1000)
        while True:
            msg = self.sock.recv_msg()
            if msg.pipe.id in self._dead_pipes:
                continue  # queued before drop(): that connection is gone
            if self.pipe is None or msg.pipe.id != self.pipe.id:
                with self._cond:
                    still_open = self.pipe is not None and self.pipe.id not in self._gone_pipes
                if still_open:
                    raise ProtocolViolation("a second connection while one is open")
                self.pipe = msg.pipe
                self._reset()
            try:
                frame = pb.Frame.FromString(msg.bytes)
            except Exception as exc:
                raise ProtocolViolation(f"undecodable frame: {exc}") from None
            self._check(frame)
            hb = frame.heartbeat
            if frame.WhichOneof("body") == "heartbeat" and hb.reply and self.answer_heartbeats:
                self.connector_heartbeats += 1
                self.send(heartbeat=pb.Heartbeat(seq=hb.seq, reply=False))
                continue
            return frame

    def expect(self, body: str, timeout: float = DEADLINE):
        """The next frame, which must be ``body``; returns its message."""
        frame = self.recv(timeout)
        got = frame.WhichOneof("body")
        if got != body:
            raise AssertionError(f"expected {body}, got {got}: {frame}")
        return getattr(frame, body)

    def barrier(self) -> List[pb.Frame]:
        """Send a heartbeat; return the frames received before its answer."""
        self._heartbeat_seq += 1
        seq = self._heartbeat_seq
        self.send(heartbeat=pb.Heartbeat(seq=seq, reply=True))
        before = []
        while True:
            frame = self.recv()
            if frame.WhichOneof("body") == "heartbeat" and frame.heartbeat.seq == seq:
                return before
            before.append(frame)

    def _check(self, frame: pb.Frame) -> None:
        body = frame.WhichOneof("body")
        if body is None:
            raise ProtocolViolation("a frame with no body")
        m = getattr(frame, body)
        state = self.state
        if state == "closed":
            raise ProtocolViolation(f"{body} after the connector's goodbye")
        if body == "goodbye":
            self.state = "closed"
            return
        if state == "hello":
            if body != "hello":
                raise ProtocolViolation(f"{body} before hello")
            if (m.version_major, m.version_minor) != (1, 0):
                raise ProtocolViolation(f"hello version {m.version_major}.{m.version_minor}")
            if m.role != self.role:
                raise ProtocolViolation(f"hello role {pb.Role.Name(m.role)}")
            if m.pid <= 0:
                raise ProtocolViolation("hello without a pid")
            self.hellos.append(m)
            self.two_pc = "2pc" in m.capabilities
            self.state = "welcome"
            return
        if state == "welcome":
            raise ProtocolViolation(f"{body} before welcome")
        if state == "in-doubt":
            if body != "in_doubt":
                raise ProtocolViolation(f"{body} before in_doubt")
            if len(m.epochs) != len(m.incarnations):
                raise ProtocolViolation("in_doubt epochs and incarnations differ in length")
            self.state = "open"
            return
        allowed = SOURCE_FRAMES if self.role == pb.ROLE_SOURCE else SINK_FRAMES
        if body not in allowed:
            raise ProtocolViolation(f"{body} from a {pb.Role.Name(self.role)}")
        getattr(self, "_check_" + body, lambda m: None)(m)

    def _check_heartbeat(self, m: pb.Heartbeat) -> None:
        if not m.reply:
            if m.seq not in self.asked:
                raise ProtocolViolation(f"heartbeat answer {m.seq} to no question")
            self.asked.discard(m.seq)

    def _check_open_stream(self, m: pb.OpenStream) -> None:
        if m.stream_id == 0 or m.stream_id in self.streams:
            raise ProtocolViolation(f"open_stream with stream id {m.stream_id}")
        if not m.name or m.name in self.streams.values():
            raise ProtocolViolation(f"open_stream with name {m.name!r}")
        self.streams[m.stream_id] = m.name

    def _check_batch(self, m: pb.Batch) -> None:
        if m.batch_id <= self.last_batch_id:
            raise ProtocolViolation(f"batch id {m.batch_id} after {self.last_batch_id}")
        self.last_batch_id = m.batch_id
        if m.step_id or m.states or m.epoch:
            raise ProtocolViolation("a source batch with step_id, states or epoch")
        if not m.events:
            raise ProtocolViolation("an empty batch")
        if len(m.events) > self.credits:
            raise ProtocolViolation(f"{len(m.events)} events with {self.credits} credits")
        self.credits -= len(m.events)
        for e in m.events:
            if e.stream_id not in self.answered:
                raise ProtocolViolation(f"an event on stream {e.stream_id}, not open")
            if e.stream_id in self.ended:
                raise ProtocolViolation(f"an event on stream {e.stream_id} after end_stream")
            name = self.streams[e.stream_id]
            if e.message_id <= self.positions.get(name, 0):
                raise ProtocolViolation(
                    f"id {e.message_id} on {name!r} after {self.positions.get(name, 0)}"
                )
            self.positions[name] = e.message_id

    def _check_end_stream(self, m: pb.EndStream) -> None:
        if m.stream_id not in self.answered or m.stream_id in self.ended:
            raise ProtocolViolation(f"end_stream for stream {m.stream_id}")
        self.ended[m.stream_id] = m.last_id

    def _check_reply(self, m: pb.BatchReply) -> None:
        if not self.inflight or m.batch_id != self.inflight[0]:
            raise ProtocolViolation(
                f"reply to batch {m.batch_id}; oldest unanswered: "
                f"{self.inflight[0] if self.inflight else None}"
            )
        if m.results or m.states:
            raise ProtocolViolation("a sink reply with results or states")
        self.inflight.popleft()

    def _check_prepared(self, m: pb.Prepared) -> None:
        if m.epoch not in self.prepares:
            raise ProtocolViolation(f"prepared for epoch {m.epoch}, not being prepared")
        self.prepares.discard(m.epoch)

    def _check_resolved(self, m: pb.Resolved) -> None:
        key = (m.epoch, m.committed)
        if key not in self.resolves:
            raise ProtocolViolation(f"resolved {key} that was not asked (or was stale)")
        self.resolves.discard(key)

    # -- session helpers --

    def accept(self, **welcome) -> pb.Hello:
        """Expect a Hello with the right token and answer Welcome (fields
        given as keyword arguments; version and incarnation filled in)."""
        hello = self.expect("hello")
        if hello.token != self.token:
            raise ProtocolViolation(f"hello token {hello.token!r}")
        welcome.setdefault("incarnation", self.incarnation)
        self.send(welcome=pb.Welcome(version_major=1, version_minor=0, worker="w0", **welcome))
        return hello

    def open_streams(
        self, count: int, resume: Optional[Dict[str, int]] = None
    ) -> Dict[str, Tuple[int, int]]:
        """Expect ``count`` OpenStream frames and answer each; resume_after
        is ``resume[name]``, else the engine's position, else the hint.
        Returns {name: (stream_id, resume_hint)}."""
        opened = {}
        for _ in range(count):
            m = self.expect("open_stream")
            opened[m.name] = (m.stream_id, m.resume_hint)
        for name, (stream_id, hint) in opened.items():
            after = (resume or {}).get(name, self.positions.get(name, hint))
            self.positions[name] = after
            self.send(stream_opened=pb.StreamOpened(stream_id=stream_id, resume_after=after))
        return opened

    def events(self, count: int) -> List[Tuple[str, int, bytes]]:
        """Receive batches until ``count`` events came; (name, id, payload)."""
        got: List[Tuple[str, int, bytes]] = []
        while len(got) < count:
            batch = self.expect("batch")
            got.extend((self.streams[e.stream_id], e.message_id, e.payload) for e in batch.events)
        assert len(got) == count, got
        return got

    def sink_batch(self, epoch: int, payloads, key: bytes = b"") -> int:
        """Send one batch of outputs to a sink; returns its batch id."""
        self.next_batch_id += 1
        b = pb.Batch(batch_id=self.next_batch_id, epoch=epoch)
        for p in payloads:
            b.events.add(key=key, payload=p, event_time=123)
        self.send(batch=b)
        return self.next_batch_id

    def close(self) -> None:
        self.sock.close()


class Running:
    """A connector run in a thread of the test process (``run_source`` or
    ``run_sink`` with ``stop=``); ``status()`` waits for its exit status."""

    def __init__(self, fn, *args, **kwargs) -> None:
        self.stop = threading.Event()
        self._status: Optional[int] = None
        self._error: Optional[BaseException] = None
        kwargs["stop"] = self.stop

        def target() -> None:
            try:
                self._status = fn(*args, **kwargs)
            except BaseException as exc:  # reported by status()
                self._error = exc

        self.thread = threading.Thread(target=target, daemon=True)
        self.thread.start()

    def status(self, timeout: float = DEADLINE) -> int:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the connector did not finish"
        if self._error is not None:
            raise self._error
        assert self._status is not None
        return self._status

    def finish(self) -> None:
        """Stop it if it still runs (test teardown)."""
        self.stop.set()
        self.thread.join(DEADLINE)


def spawn(code: str, engine: Optional[FakeEngine] = None, env=None, args=()) -> subprocess.Popen:
    """Run ``code`` (or a script path when ``code`` ends in .py) as a child
    process with the environment of a spawned connector of ``engine``.
    ``env`` entries override (None removes)."""
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = SDK_ROOT + os.pathsep + full_env.get("PYTHONPATH", "")
    if engine is not None:
        full_env.update(
            {
                "WALLAROO_ENGINE_ADDR": engine.addr,
                "WALLAROO_TOKEN": engine.token,
                "WALLAROO_PROGRAM": "conn",
                "WALLAROO_INSTANCE": "0",
                "WALLAROO_ROLE": "source" if engine.role == pb.ROLE_SOURCE else "sink",
                "WALLAROO_CONNECTOR": "test-connector",
            }
        )
    for key, value in (env or {}).items():
        if value is None:
            full_env.pop(key, None)
        else:
            full_env[key] = value
    argv = [sys.executable, code, *args] if code.endswith(".py") else [sys.executable, "-c", code, *args]
    # A shell that runs the tests in the background ignores SIGINT, and
    # children inherit that: give the connector the default back, as a
    # terminal would.
    return subprocess.Popen(
        argv, env=full_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def wait_line(proc: subprocess.Popen, text: str, timeout: float = DEADLINE) -> None:
    """Wait until the child's stderr shows ``text`` (no sleeping: reads the
    pipe as lines arrive). ``finish`` returns every line, these included."""
    buf = proc.__dict__.setdefault("stderr_text", [""])
    deadline = time.monotonic() + timeout
    fd = proc.stderr.fileno()
    while text not in buf[0]:
        left = deadline - time.monotonic()
        ready, _, _ = select.select([fd], [], [], max(0.0, left))
        if not ready:
            raise AssertionError(f"no {text!r} on stderr within {timeout} s:\n{buf[0]}")
        chunk = os.read(fd, 65536)
        if not chunk:
            raise AssertionError(f"the connector exited without {text!r}:\n{buf[0]}")
        buf[0] += chunk.decode(errors="replace")


def finish(proc: subprocess.Popen, timeout: float = DEADLINE) -> Tuple[int, List[str]]:
    """Wait for a child connector; returns (status, stderr lines)."""
    buf = proc.__dict__.setdefault("stderr_text", [""])
    deadline = time.monotonic() + timeout
    fd = proc.stderr.fileno()
    while True:
        left = deadline - time.monotonic()
        ready, _, _ = select.select([fd], [], [], max(0.0, left))
        if not ready:
            proc.kill()
            proc.wait()
            raise AssertionError("the connector did not exit:\n" + buf[0])
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        buf[0] += chunk.decode(errors="replace")
    proc.stderr.close()
    status = proc.wait(max(0.1, deadline - time.monotonic()))
    return status, buf[0].splitlines()
