"""The source side of the connector protocol (protocol/README.md, 6.2).

After Welcome the session calls ``Source.welcome`` with the connection's
initial credits and batch size, then opens every stream that has not ended
(OpenStream, with the last acknowledged id as the hint) and waits for all
the StreamOpened answers. The first time a stream is opened in this run it
calls ``Source.open`` with the engine's ``resume_after``; after a
reconnect it instead sends again, from its replay buffer, the messages the
engine does not have (ids above the new ``resume_after``). Then it polls
the source, never for more events than the credits left, and sends each
poll's messages as one Batch (split only to stay under the frame limit).

Every sent message stays in its stream's replay buffer until an Ack covers
it; ``Source.acked`` is called when a stream's acknowledged position
advances. ``End`` becomes EndStream, StreamEnded ends the stream, and when
every stream has ended the session says Goodbye and the run exits 0.
"""

from __future__ import annotations

import collections
import enum
import time
from typing import Any, Deque, Dict, List, Optional

from ._ipc import PAIR1_HEADER
from ._connector_session import (
    DEFAULT_MAX_BATCH_EVENTS,
    Phase,
    Session,
    UserCodeError,
    call_user,
)
from ._log import log
from ._pb import wallaroo_pb2 as pb
from .connector import ConnectorConfig, End, Message, Source, StreamSpec

# Bytes a Batch frame adds around its events: the Frame's tag and length
# (1 + 5) and the batch_id field (1 + 10).
_BATCH_OVERHEAD = 17


class StreamState(enum.Enum):
    """Where one stream is, over the whole run."""

    OPEN = "open"  # the source may produce messages on it
    ENDING = "ending"  # the source returned End; waiting for StreamEnded
    ENDED = "ended"  # StreamEnded received: nothing more to do


class _Stream:
    """A stream of the source, across connections."""

    __slots__ = (
        "name",
        "handle",
        "state",
        "acked",
        "last_id",
        "max_sent",
        "unacked",
        "opened_once",
        "opened",
        "end_sent",
        "skipped",
    )

    def __init__(self, spec: StreamSpec, handle: int) -> None:
        self.name = spec.name
        self.handle = handle  # the stream_id used on every connection
        self.state = StreamState.OPEN
        self.acked = spec.resume_hint  # highest id acknowledged (hint at start)
        self.last_id = 0  # highest id sent, or the engine's resume_after
        self.max_sent = 0  # highest id sent in this run (EndStream.last_id)
        self.unacked: Deque[Message] = collections.deque()  # sent, not acked
        self.opened_once = False  # Source.open was called
        # Per connection:
        self.opened = False  # StreamOpened received
        self.end_sent = False  # EndStream sent
        self.skipped = 0  # messages not sent because the engine has them


class SourceSession(Session):
    """A source connector's run."""

    role = pb.ROLE_SOURCE
    role_name = "source"

    def __init__(
        self,
        source: Source,
        config: ConnectorConfig,
        *,
        connect_timeout: float,
        drain_timeout: float,
        poll_timeout: float,
        stop: Any,
    ) -> None:
        super().__init__(source, config, connect_timeout=connect_timeout, stop=stop)
        self.source = source
        self.drain_timeout = drain_timeout
        self.poll_timeout = poll_timeout
        self.streams: List[_Stream] = []
        self.by_name: Dict[str, _Stream] = {}
        self.by_handle: Dict[int, _Stream] = {}
        self.drain_deadline: Optional[float] = None
        # Per connection:
        self.credits = 0
        self.max_batch_events = DEFAULT_MAX_BATCH_EVENTS
        self.batch_seq = 0
        self.replay: Deque[Message] = collections.deque()

    # -- setup --

    def start(self) -> None:
        specs = call_user(f"{type(self.source).__name__}.streams()", self.source.streams)
        try:
            specs = list(specs)
        except TypeError:
            raise UserCodeError(
                f"{type(self.source).__name__}.streams() must return a list of "
                f"StreamSpec, not {type(specs).__name__}"
            ) from None
        for spec in specs:
            if isinstance(spec, str):
                spec = StreamSpec(spec)
            if not isinstance(spec, StreamSpec):
                raise UserCodeError(
                    f"streams() returned {spec!r}: expected StreamSpec(name, resume_hint)"
                )
            if not isinstance(spec.name, str) or not spec.name:
                raise UserCodeError(f"streams() returned {spec!r}: the name must be a non-empty str")
            if not _is_uint(spec.resume_hint):
                raise UserCodeError(
                    f"streams() returned {spec!r}: resume_hint must be an int >= 0"
                )
            if spec.name in self.by_name:
                raise UserCodeError(f"streams() returned the stream {spec.name!r} twice")
            stream = _Stream(spec, len(self.streams) + 1)
            self.streams.append(stream)
            self.by_name[stream.name] = stream
            self.by_handle[stream.handle] = stream

    def on_welcome(self, welcome: pb.Welcome) -> None:
        self.credits = welcome.initial_credits
        self.max_batch_events = welcome.max_batch_events or DEFAULT_MAX_BATCH_EVENTS
        self.batch_seq = 0
        self.replay.clear()
        live = [s for s in self.streams if s.state is not StreamState.ENDED]
        if not live:
            self.finish("no stream to serve")
        call_user(
            f"{type(self.source).__name__}.welcome({self.credits}, {self.max_batch_events})",
            self.source.welcome,
            self.credits,
            self.max_batch_events,
        )
        for stream in live:
            stream.opened = False
            stream.end_sent = False
            stream.skipped = 0
            frame = pb.Frame()
            frame.open_stream.stream_id = stream.handle
            frame.open_stream.name = stream.name
            frame.open_stream.resume_hint = stream.acked
            self.send(frame)
        self.phase = Phase.STARTING

    def on_disconnect(self) -> None:
        self.credits = 0
        self.replay.clear()
        for stream in self.streams:
            stream.opened = False
            stream.end_sent = False

    # -- frames from the engine --

    def on_frame(self, body: str, msg: Any) -> bool:
        if self.phase is Phase.STARTING or self.phase is Phase.OPEN:
            if body == "stream_opened":
                self._on_stream_opened(msg)
                return True
            if body == "credit":
                self.credits += msg.events
                return True
            if body == "ack":
                self._on_ack(msg)
                return True
            if body == "stream_ended":
                self._on_stream_ended(msg)
                return True
        return False

    def _stream_for(self, body: str, handle: int) -> Optional[_Stream]:
        stream = self.by_handle.get(handle)
        if stream is None or stream.state is StreamState.ENDED:
            self.bad_frame(f"{body} for stream id {handle}, which is not open")
            return None
        return stream

    def _on_stream_opened(self, msg: pb.StreamOpened) -> None:
        stream = self._stream_for("stream_opened", msg.stream_id)
        if stream is None:
            return
        if stream.opened:
            self.bad_frame(f"a second stream_opened for stream id {msg.stream_id}")
            return
        stream.opened = True
        resume_after = msg.resume_after
        if not stream.opened_once:
            stream.opened_once = True
            stream.last_id = resume_after
            log(f"stream {stream.name!r} opened, resuming after id {resume_after}")
            call_user(
                f"{type(self.source).__name__}.open({stream.name!r}, {resume_after})",
                self.source.open,
                stream.name,
                resume_after,
            )
        else:
            again = [m for m in stream.unacked if m.id > resume_after]
            self.replay.extend(again)
            stream.last_id = max(stream.last_id, resume_after)
            log(
                f"stream {stream.name!r} opened again, resuming after id "
                f"{resume_after}; sending {len(again)} unacknowledged message"
                f"{'' if len(again) == 1 else 's'} again"
            )
        if all(s.opened for s in self.streams if s.state is not StreamState.ENDED):
            self.phase = Phase.OPEN

    def _on_ack(self, msg: pb.Ack) -> None:
        stream = self._stream_for("ack", msg.stream_id)
        if stream is None:
            return
        self._acknowledge(stream, msg.up_to)

    def _acknowledge(self, stream: _Stream, up_to: int) -> None:
        unacked = stream.unacked
        while unacked and unacked[0].id <= up_to:
            unacked.popleft()
        if up_to > stream.acked:
            stream.acked = up_to
            self.progress()
            call_user(
                f"{type(self.source).__name__}.acked({stream.name!r}, {up_to})",
                self.source.acked,
                stream.name,
                up_to,
            )

    def _on_stream_ended(self, msg: pb.StreamEnded) -> None:
        stream = self._stream_for("stream_ended", msg.stream_id)
        if stream is None:
            return
        if not stream.end_sent:
            self.bad_frame(
                f"stream_ended for stream id {msg.stream_id} ({stream.name!r}), "
                f"which was not ended"
            )
            return
        self._acknowledge(stream, msg.up_to)
        stream.unacked.clear()
        stream.state = StreamState.ENDED
        log(f"stream {stream.name!r} ended at id {msg.up_to}")
        if all(s.state is StreamState.ENDED for s in self.streams):
            self.finish("every stream ended")

    # -- stopping --

    def on_stop(self) -> None:
        if self.drain_deadline is None:
            self.drain_deadline = time.monotonic() + self.drain_timeout
        self._check_drained()

    def _check_drained(self) -> None:
        outstanding = sum(len(s.unacked) for s in self.streams)
        if outstanding == 0:
            self.finish("stopped")
        assert self.drain_deadline is not None
        if time.monotonic() >= self.drain_deadline:
            log(
                f"{outstanding} sent message{'' if outstanding == 1 else 's'} "
                f"still unacknowledged after {self.drain_timeout:g} s; stopping anyway"
            )
            self.finish("stopped")

    # -- work --

    def work(self) -> bool:
        if self.stopping:
            self._check_drained()
            return False
        if self.phase is not Phase.OPEN:
            return False
        if self.replay:
            if self.credits == 0:
                return False
            self._send_replay()
            return True
        for stream in self.streams:
            if stream.state is StreamState.ENDING and not stream.end_sent:
                self._send_end(stream)
        if self.credits == 0:
            return False
        if not any(s.state is StreamState.OPEN for s in self.streams):
            return False
        self._poll()
        return True

    def _poll(self) -> None:
        limit = min(self.credits, self.max_batch_events)
        # However long the source may wait, heartbeats must be answered in
        # time: the engine gives up on a connector after heartbeat_timeout.
        timeout = min(self.poll_timeout, self.heartbeat_timeout / 4)
        started = time.monotonic()
        name = type(self.source).__name__
        items = call_user(
            f"{name}.poll({limit}, {timeout:g})",
            self.source.poll,
            limit,
            timeout,
        )
        if items is None:
            items = ()
        try:
            items = list(items)
        except TypeError:
            raise UserCodeError(
                f"{name}.poll() must return a list of Message and End, "
                f"not {type(items).__name__}"
            ) from None
        if not items:
            # A poll that returns at once with nothing must not spin the
            # loop: wait for the rest of its timeout (or a frame).
            left = timeout - (time.monotonic() - started)
            if left > 0 and self.link is not None:
                self.link.wait_readable(left)
            return
        count = sum(1 for item in items if not isinstance(item, End))
        if count > limit:
            raise UserCodeError(
                f"{name}.poll({limit}, ...) returned {count} messages: "
                f"more than max_events would exceed the engine's credits"
            )
        batch = _BatchBuilder(self)
        for item in items:
            if isinstance(item, End):
                batch.flush()
                self._end(item)
            elif isinstance(item, Message):
                message = self._check_message(item)
                if message is not None:
                    batch.add(message)
            else:
                raise UserCodeError(
                    f"{name}.poll() returned {item!r}: expected Message or End"
                )
        batch.flush()

    def _check_message(self, m: Message) -> Optional[Message]:
        """The message to send (payload and key as bytes), or None when the
        engine already has it. Raises UserCodeError for a broken one."""
        stream = self.by_name.get(m.stream)
        if stream is None:
            raise UserCodeError(f"poll() returned a message for an unknown stream: {m!r}")
        if stream.state is not StreamState.OPEN:
            raise UserCodeError(
                f"poll() returned a message for stream {m.stream!r} after its End: {m!r}"
            )
        if not _is_uint(m.id) or m.id == 0:
            raise UserCodeError(f"poll() returned a message whose id is not an int > 0: {m!r}")
        payload, key = m.payload, m.key
        if not isinstance(payload, bytes) or not isinstance(key, bytes):
            try:
                payload, key = _as_bytes(payload, "payload"), _as_bytes(key, "key")
            except TypeError as exc:
                raise UserCodeError(f"poll() returned {m!r}: {exc}") from None
            m = m._replace(payload=payload, key=key)
        if not isinstance(m.event_time, int) or isinstance(m.event_time, bool):
            raise UserCodeError(
                f"poll() returned {m!r}: event_time must be an int (microseconds)"
            )
        if m.id <= stream.last_id:
            if stream.skipped == 0:
                log(
                    f"stream {m.stream!r}: not sending id {m.id} (and later ones like "
                    f"it): the engine already has every id up to {stream.last_id}"
                )
            stream.skipped += 1
            return None
        stream.last_id = stream.max_sent = m.id
        return m

    def _end(self, end: End) -> None:
        stream = self.by_name.get(end.stream)
        if stream is None:
            raise UserCodeError(f"poll() returned {end!r} for an unknown stream")
        if stream.state is not StreamState.OPEN:
            raise UserCodeError(f"poll() returned {end!r} twice")
        stream.state = StreamState.ENDING
        self._send_end(stream)

    def _send_end(self, stream: _Stream) -> None:
        frame = pb.Frame()
        frame.end_stream.stream_id = stream.handle
        frame.end_stream.last_id = stream.max_sent
        self.send(frame)
        stream.end_sent = True

    def _send_replay(self) -> None:
        batch = _BatchBuilder(self)
        taken = 0
        while self.replay and self.credits > 0 and taken < self.max_batch_events:
            message = self.replay.popleft()
            stream = self.by_name[message.stream]
            if message.id <= stream.acked:
                continue  # acknowledged meanwhile: nothing to send
            batch.add(message, replayed=True)
            taken += 1
        batch.flush()


class _BatchBuilder:
    """Collects events into Batch frames no larger than the frame limit."""

    def __init__(self, session: SourceSession) -> None:
        self.session = session
        self.limit = session.max_send - PAIR1_HEADER
        self.frame = pb.Frame()
        self.size = _BATCH_OVERHEAD
        self.count = 0

    def add(self, m: Message, replayed: bool = False) -> None:
        session = self.session
        stream = session.by_name[m.stream]
        event = pb.Event(
            key=m.key,
            payload=m.payload,
            event_time=m.event_time,
            stream_id=stream.handle,
            message_id=m.id,
        )
        size = event.ByteSize()
        cost = 1 + _varint_len(size) + size
        if _BATCH_OVERHEAD + cost > self.limit:
            raise UserCodeError(
                f"message {m.id} of stream {m.stream!r} is {len(m.payload)} bytes: "
                f"its frame would be over the engine's limit of {self.limit} bytes "
                f"(message_max_bytes less the {PAIR1_HEADER}-byte pair1 header)"
            )
        if self.size + cost > self.limit:
            self.flush()
        self.frame.batch.events.append(event)
        self.size += cost
        self.count += 1
        session.credits -= 1
        if not replayed:
            stream.unacked.append(m)

    def flush(self) -> None:
        if self.count == 0:
            return
        session = self.session
        session.batch_seq += 1
        self.frame.batch.batch_id = session.batch_seq
        frame, self.frame = self.frame, pb.Frame()
        self.size = _BATCH_OVERHEAD
        self.count = 0
        session.send(frame)


def _varint_len(n: int) -> int:
    length = 1
    while n >= 0x80:
        n >>= 7
        length += 1
    return length


def _is_uint(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 64


def _as_bytes(value: Any, what: str) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"{what} must be bytes, not {type(value).__name__}")
