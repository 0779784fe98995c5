#!/usr/bin/env python3
"""RabbitMQ source connector: consume queues into wallaroo-engine.

Each queue is one stream, named after the queue. A message goes to the
engine as one event (payload = body) whose id is read from the message (its
AMQP ``message_id`` by default); the broker is acknowledged for a message
only once the engine has acknowledged its id (``Source.acked``), so a
message is never lost: until then the broker holds it, and redelivers it
after a crash of this process or a lost connection. See README.md beside
this file for the guarantee, the flags and how ids work.

Built on ``wallaroo.connector.Source`` (docs/connectors.md), with pika's
BlockingConnection: every broker call happens on the thread that calls
``poll``; ``acked`` from another thread hands its work over.
"""

from __future__ import annotations

import argparse
import collections
import logging
import os
import sys
import threading
import time
from typing import Deque, Dict, List, NamedTuple, Optional, Sequence, Tuple

import pika
import pika.exceptions

from wallaroo.connector import ConnectorConfig, Message, Source, StreamSpec, run_source

__all__ = ["RabbitMQSource", "SourceOptions", "parse_args", "parse_id", "main"]

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
MAX_ID = 2**64 - 1
# basic.qos prefetch-count is an AMQP short: 0 means "no limit", which we
# never want, and 65535 is the most a channel can ask for.
MAX_PREFETCH = 65535
# The prefetch of a source connected before any Welcome and any poll
# (never, through the SDK) and without --prefetch.
FALLBACK_PREFETCH = 256

# Failures of the broker connection we recover from by reconnecting: pika's
# own, and OSError for a socket that dies under it.
BROKER_ERRORS = (pika.exceptions.AMQPError, OSError)


def log(message: str) -> None:
    """One line on stderr, with a stable tag at the start of ``message``."""
    try:
        sys.stderr.write("rabbitmq-source: " + message.replace("\n", "\\n") + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


class SourceOptions(NamedTuple):
    """What the source needs to know; ``parse_args`` builds it."""

    url: str = DEFAULT_URL
    queues: Tuple[str, ...] = ()
    declare: bool = False
    # "message_id" or "header:NAME".
    id_from: str = "message_id"
    # Header whose value becomes the event key; None: events are unkeyed.
    key_header: Optional[str] = None
    # Per-queue basic.qos prefetch; 0: the engine's initial credits split
    # over the queues (see RabbitMQSource._window).
    prefetch: int = 0
    # Reconnect backoff: first wait, and the most it grows to (seconds).
    reconnect_min: float = 0.1
    reconnect_max: float = 5.0
    # AMQP heartbeat (seconds). pika answers heartbeats while poll runs; the
    # SDK calls poll whenever it has credits.
    heartbeat: int = 60


def parse_id(value: object) -> Optional[int]:
    """The message id in ``value`` (an int, or a decimal str or bytes), or
    None when it is missing or not an integer in 1..2**64-1."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        n = value
    elif isinstance(value, (str, bytes)):
        text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
        text = text.strip()
        # int() would accept "+5", "1_000" and other spellings: a publisher
        # that writes those has a bug we would rather report.
        if not text.isdigit() or not text.isascii():
            return None
        n = int(text)
    else:
        return None
    if 1 <= n <= MAX_ID:
        return n
    return None


class _Delivery(NamedTuple):
    tag: int
    redelivered: bool
    properties: pika.BasicProperties
    body: bytes


class RabbitMQSource(Source):
    """Consumes ``options.queues``; one stream per queue.

    State per queue, valid for one broker connection (delivery tags belong
    to a channel, and die with it):

    - ``_buffer``: deliveries not yet handed to the engine, in delivery
      order;
    - ``_inflight``: (message id, delivery tag) of the messages handed to
      the engine (or held because the engine already has their id), in
      delivery order, waiting for ``acked``.

    State per queue for the whole session: ``_max_sent``, the highest id
    handed to the SDK (which keeps it until the engine acknowledges it, and
    sends it again after an engine reconnect), and ``_acked_up_to``, the
    engine's last acknowledged position.
    """

    def __init__(self, options: SourceOptions) -> None:
        if not options.queues:
            raise ValueError("at least one queue is needed")
        if len(set(options.queues)) != len(options.queues):
            raise ValueError("a queue is named twice")
        if options.id_from != "message_id" and not (
            options.id_from.startswith("header:") and len(options.id_from) > 7
        ):
            raise ValueError(
                f"--id-from must be message_id or header:NAME, not {options.id_from!r}"
            )
        self.options = options
        self._params = pika.URLParameters(options.url)
        self._params.heartbeat = options.heartbeat
        # Loopback brokers refuse at once; a remote one that does not answer
        # must not hold poll (and the SDK's heartbeats) for long.
        self._params.socket_timeout = 5
        self._params.blocked_connection_timeout = 30
        self._conn: Optional[pika.BlockingConnection] = None
        self._channels: Dict[str, "pika.adapters.blocking_connection.BlockingChannel"] = {}
        self._owner: Optional[int] = None
        self._buffer: Dict[str, Deque[_Delivery]] = {}
        self._inflight: Dict[str, Deque[Tuple[int, int]]] = {}
        self._unsorted: Dict[str, bool] = {}
        self._max_sent: Dict[str, int] = {q: 0 for q in options.queues}
        self._lock = threading.Lock()
        self._acked_up_to: Dict[str, int] = {q: 0 for q in options.queues}
        self._ack_dirty: set = set()
        self._next_attempt = 0.0
        self._backoff = options.reconnect_min
        self._largest_max_events = 0
        # (initial_credits, max_batch_events) of the engine connection.
        self._welcomed: Optional[Tuple[int, int]] = None
        self._prefetch = 0  # the prefetch of the current broker connection
        self._stale_window = False  # a Welcome changed the window since
        self._rr = 0  # round-robin start among queues
        self._closed = False
        self._cancelled: Optional[str] = None
        # Counters, for tests and the log.
        self.stats = collections.Counter()

    # -- the Source contract ----------------------------------------------

    def streams(self) -> List[StreamSpec]:
        """One stream per queue. No hint: positions live in the engine, and
        the broker keeps what the engine has not acknowledged."""
        return [StreamSpec(q) for q in self.options.queues]

    def welcome(self, initial_credits: int, max_batch_events: int) -> None:
        """Sizes the prefetch from the engine's credits (_window). When a new
        engine connection changes it, the next poll subscribes again."""
        self._welcomed = (initial_credits, max_batch_events)
        # Acted on in poll, the thread that owns the broker connection.
        self._stale_window = self._conn is not None and self._window() != self._prefetch

    def open(self, stream: str, resume_after: int) -> None:
        # Ids up to resume_after were accepted by the engine but are not
        # necessarily done, so they stay unacknowledged at the broker; the
        # SDK would not send them again, so they are held like any id
        # already sent (_take_one) until acked() covers them. The engine
        # sends an Ack with its position to every new connection, which
        # covers those already done.
        self._max_sent[stream] = max(self._max_sent[stream], resume_after)
        log(f"RMQ-OPEN queue {stream}: the engine resumes after id {resume_after}")

    def poll(self, max_events: int, timeout: float) -> List[Message]:
        deadline = time.monotonic() + max(0.0, timeout)
        if max_events > self._largest_max_events:
            self._largest_max_events = max_events
        out: List[Message] = []
        if self._stale_window:
            self._stale_window = False
            if self._conn is not None:
                self._resubscribe()
        while True:
            if self._conn is None and not self._connect():
                # Broker away: wait for the next attempt or the deadline.
                now = time.monotonic()
                wait = min(deadline, self._next_attempt) - now
                if wait > 0:
                    time.sleep(wait)
                if time.monotonic() >= deadline:
                    return out
                continue
            try:
                self._flush_acks()
                self._take(out, max_events)
                remaining = deadline - time.monotonic()
                if out or remaining <= 0:
                    return out
                # Returns early when a delivery (or any event) is ready.
                self._conn.process_data_events(time_limit=remaining)
                self._check_channels()
            except BROKER_ERRORS as e:
                self._lost(e)

    def acked(self, stream: str, up_to: int) -> None:
        with self._lock:
            if up_to <= self._acked_up_to.get(stream, 0):
                return
            self._acked_up_to[stream] = up_to
            self._ack_dirty.add(stream)
        conn = self._conn
        if conn is None:
            # Nothing to acknowledge on: what was delivered is void, and a
            # redelivery at or below up_to is acknowledged when it arrives.
            return
        if threading.get_ident() == self._owner:
            try:
                self._flush_acks()
            except BROKER_ERRORS as e:
                self._lost(e)
        else:
            try:
                # Runs inside poll's process_data_events, on the owner
                # thread; a broker failure there surfaces in poll.
                conn.add_callback_threadsafe(self._flush_acks)
            except BROKER_ERRORS:
                pass  # poll finds the connection closed and reconnects

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._conn is not None:
            try:
                self._flush_acks()
            except BROKER_ERRORS as e:
                log(f"RMQ-LOST last acknowledgements not sent: {e!r}")
        self._disconnect()
        log(
            "RMQ-CLOSE "
            + ", ".join(f"{k} {v}" for k, v in sorted(self.stats.items()))
        )

    # -- connection --------------------------------------------------------

    def _window(self) -> int:
        """The prefetch of each queue's consumer.

        --prefetch when given. Otherwise the engine's credits, split over
        the queues: the engine holds at most Welcome.initial_credits events
        of a connection at once (credits come back only as it finishes
        them), so more unacknowledged deliveries than that could only wait
        here, and fewer would leave credits unused. The broker is
        acknowledged only after the engine's Ack, which lags the credits
        (a position advances only when every earlier id is done), so the
        prefetch, not the credits, is the bound on what is out of the
        queues: when the engine is slow or withholds credits, the broker
        stops delivering and back pressure reaches the queues.

        initial_credits 0 (credits only by Credit frames) uses
        max_batch_events instead; every queue gets at least 1. A source
        used without the SDK (no welcome) takes the largest max_events
        poll was given.
        """
        if self.options.prefetch:
            n = self.options.prefetch
        elif self._welcomed is not None:
            credits, batch = self._welcomed
            n = max(1, (credits or batch) // len(self.options.queues))
        else:
            n = self._largest_max_events or FALLBACK_PREFETCH
        return max(1, min(MAX_PREFETCH, n))

    def _resubscribe(self) -> None:
        """Starts the consumers again with the current window.

        A consumer's prefetch is fixed when it starts, so this reconnects:
        the broker requeues what it had delivered and not been
        acknowledged, and redelivers it on the new connection, where it is
        held (the SDK has it) or acknowledged (the engine did), as after
        any lost connection; nothing is sent to the engine twice.
        """
        old = self._prefetch
        self._disconnect()
        self.stats["resubscribes"] += 1
        log(
            f"RMQ-PREFETCH the engine's credits changed: prefetch {old} -> "
            f"{self._window()} per queue; subscribing again"
        )

    def _connect(self) -> bool:
        """Connects, declares and starts the consumers. False when it failed
        or when the backoff says not yet."""
        if self._closed or time.monotonic() < self._next_attempt:
            return False
        conn = None
        # Before the consumers start: deliveries land here.
        for q in self.options.queues:
            self._buffer[q] = collections.deque()
            self._inflight[q] = collections.deque()
            self._unsorted[q] = False
        window = self._window()
        try:
            conn = pika.BlockingConnection(self._params)
            channels = {}
            for q in self.options.queues:
                ch = conn.channel()
                if self.options.declare:
                    ch.queue_declare(q, durable=True)
                # Per consumer (not global): quorum queues refuse global QoS.
                ch.basic_qos(prefetch_count=window)
                ch.basic_consume(
                    q,
                    on_message_callback=self._on_message_for(q),
                    auto_ack=False,
                )
                ch.add_on_cancel_callback(self._on_cancel_for(q))
                channels[q] = ch
        except BROKER_ERRORS as e:
            self.stats["connect_failures"] += 1
            if conn is not None:
                try:
                    conn.close()
                except Exception:
                    pass
            self._schedule_retry(f"RMQ-CONNECT failed ({_describe(e)})")
            return False
        self._conn = conn
        self._channels = channels
        self._prefetch = window
        self._owner = threading.get_ident()
        self._backoff = self.options.reconnect_min
        self.stats["connects"] += 1
        log(
            f"RMQ-CONNECT consuming {', '.join(self.options.queues)} "
            f"(prefetch {window} per queue)"
        )
        return True

    def _schedule_retry(self, why: str) -> None:
        log(f"{why}; retrying in {self._backoff:.1f} s")
        self._next_attempt = time.monotonic() + self._backoff
        self._backoff = min(self.options.reconnect_max, self._backoff * 2)

    def _lost(self, error: BaseException) -> None:
        """The connection (or a channel) failed: forget every delivery tag;
        the broker requeues what was not acknowledged and redelivers it on
        the next connection."""
        self.stats["connection_losses"] += 1
        self._disconnect()
        self._schedule_retry(f"RMQ-LOST connection lost ({_describe(error)})")

    def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        self._channels = {}
        self._buffer = {}
        self._inflight = {}
        self._owner = None
        if conn is not None:
            try:
                if conn.is_open:
                    conn.close()
            except Exception:
                pass  # already gone

    def _check_channels(self) -> None:
        if self._cancelled is not None:
            q, self._cancelled = self._cancelled, None
            raise pika.exceptions.ConsumerCancelled(
                f"the broker cancelled the consumer of queue {q}"
            )
        for q, ch in self._channels.items():
            if not ch.is_open:
                raise pika.exceptions.ChannelClosed(0, f"channel of queue {q} closed")

    def _on_cancel_for(self, queue: str):
        def on_cancel(_frame) -> None:
            # The broker cancelled our consumer (queue deleted, node
            # failover): _check_channels starts over on a fresh connection.
            self.stats["cancelled"] += 1
            self._cancelled = queue

        return on_cancel

    def _on_message_for(self, queue: str):
        def on_message(_ch, method, properties, body) -> None:
            self._buffer[queue].append(
                _Delivery(method.delivery_tag, bool(method.redelivered), properties, body)
            )

        return on_message

    # -- deliveries ----------------------------------------------------------

    def _message_id(self, properties: pika.BasicProperties) -> Tuple[Optional[int], object]:
        if self.options.id_from == "message_id":
            raw = properties.message_id
        else:
            raw = (properties.headers or {}).get(self.options.id_from[7:])
        return parse_id(raw), raw

    def _take(self, out: List[Message], max_events: int) -> None:
        """Moves deliveries from the buffers into ``out`` (at most
        max_events), round-robin over queues, settling on the way those the
        engine must not see."""
        queues = self.options.queues
        n = len(queues)
        progress = True
        while progress:
            progress = False
            for i in range(n):
                q = queues[(self._rr + i) % n]
                if self._take_one(q, out, max_events):
                    progress = True
            self._rr = (self._rr + 1) % n

    def _take_one(self, q: str, out: List[Message], max_events: int) -> bool:
        """Handles the oldest delivery of queue q; False if there is none or
        it needs a credit and out is full."""
        buf = self._buffer[q]
        while buf:
            d = buf[0]
            mid, raw = self._message_id(d.properties)
            ch = self._channels[q]
            if mid is None:
                buf.popleft()
                # Without a valid id the engine could neither order nor
                # deduplicate it. Not requeued: it would come back forever;
                # a queue with a dead-letter exchange keeps it there.
                ch.basic_reject(d.tag, requeue=False)
                self.stats["rejected_bad_id"] += 1
                log(
                    f"RMQ-BAD-ID queue {q}: message without a valid id "
                    f"({self.options.id_from} = {raw!r}) rejected, not requeued"
                )
                continue
            if mid <= self._acked_up_to[q]:
                # The engine already acknowledged this id (a redelivery
                # after a reconnect): done, settle it now. Sending it again
                # would cost a credit and would not move the position, so no
                # Ack would ever cover it.
                buf.popleft()
                ch.basic_ack(d.tag)
                self.stats["acked_on_redelivery"] += 1
                if not d.redelivered:
                    self._out_of_order(q, mid)
                continue
            if mid <= self._max_sent[q]:
                # The SDK already has this id and delivers it to the engine
                # (it keeps it until acknowledged): hold the new tag until
                # acked() covers it.
                buf.popleft()
                self._hold(q, mid, d.tag)
                self.stats["held_redelivery"] += 1
                if not d.redelivered:
                    self._out_of_order(q, mid)
                continue
            if len(out) >= max_events:
                return False
            buf.popleft()
            key = b""
            if self.options.key_header is not None:
                key = _to_bytes((d.properties.headers or {}).get(self.options.key_header))
            event_time = 0
            if d.properties.timestamp:
                # AMQP timestamps are seconds; events carry microseconds.
                event_time = int(d.properties.timestamp) * 1_000_000
            out.append(Message(q, mid, d.body, key=key, event_time=event_time))
            self._max_sent[q] = mid
            self._hold(q, mid, d.tag)
            self.stats["sent"] += 1
            return True
        return False

    def _out_of_order(self, q: str, mid: int) -> None:
        """A first delivery whose id is not above those already sent: the
        publisher's ids do not increase. Handled as the engine handles it, as
        a duplicate, and logged."""
        self.stats["id_not_increasing"] += 1
        log(
            f"RMQ-ID-ORDER queue {q}: id {mid} is not above {self._max_sent[q]}, "
            f"already sent, and is not a redelivery: the publisher must give "
            f"increasing ids; handled as a duplicate"
        )

    def _hold(self, q: str, mid: int, tag: int) -> None:
        inflight = self._inflight[q]
        if inflight and mid < inflight[-1][0]:
            self._unsorted[q] = True
        inflight.append((mid, tag))

    # -- acknowledgements ------------------------------------------------------

    def _flush_acks(self) -> None:
        """Acknowledges to the broker every held delivery whose id the engine
        has acknowledged."""
        with self._lock:
            dirty = [(q, self._acked_up_to[q]) for q in self._ack_dirty]
            self._ack_dirty.clear()
        for q, up_to in dirty:
            inflight = self._inflight.get(q)
            ch = self._channels.get(q)
            if not inflight or ch is None:
                continue
            # Tags grow in delivery order and inflight is in delivery order,
            # so the leading entries covered by up_to are every unsettled tag
            # of this channel up to the last of them: one multiple ack.
            last = None
            count = 0
            while inflight and inflight[0][0] <= up_to:
                last = inflight.popleft()[1]
                count += 1
            if last is not None:
                ch.basic_ack(last, multiple=count > 1)
                self.stats["broker_acks"] += count
            if self._unsorted[q] and inflight:
                # Ids out of delivery order (a publisher bug, or requeues
                # mixing order): the rest one by one.
                keep: Deque[Tuple[int, int]] = collections.deque()
                for mid, tag in inflight:
                    if mid <= up_to:
                        ch.basic_ack(tag)
                        self.stats["broker_acks"] += 1
                    else:
                        keep.append((mid, tag))
                self._inflight[q] = keep
                inflight = keep
            if not inflight:
                self._unsorted[q] = False

    def unacked(self, queue: str) -> List[int]:
        """Ids held for the engine's acknowledgement on queue (for tests)."""
        return [mid for mid, _ in self._inflight.get(queue, ())]


def _to_bytes(value: object) -> bytes:
    if value is None:
        return b""
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8")


def _describe(e: BaseException) -> str:
    text = str(e) or ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


# -- command line ----------------------------------------------------------------


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def parse_args(argv: Sequence[str], with_engine: bool = False):
    """Options from flags, then the environment, then defaults. With
    ``with_engine``, returns (options, ConnectorConfig or None)."""
    env = os.environ
    p = argparse.ArgumentParser(
        prog="rabbitmq_source.py",
        description="Consume RabbitMQ queues into wallaroo-engine (one stream per queue).",
    )
    p.add_argument("--url", default=env.get("RABBITMQ_URL", DEFAULT_URL),
                   help="AMQP URL (env RABBITMQ_URL; default %(default)s)")
    p.add_argument("--queue", action="append", default=None, metavar="NAME",
                   help="a queue to consume, repeatable (env RABBITMQ_QUEUES, comma-separated)")
    p.add_argument("--declare", action="store_true", default=_env_flag("RABBITMQ_DECLARE"),
                   help="declare the queues (durable) if missing (env RABBITMQ_DECLARE=1)")
    p.add_argument("--id-from", default=env.get("RABBITMQ_ID_FROM", "message_id"),
                   metavar="message_id|header:NAME",
                   help="where a message's id is (env RABBITMQ_ID_FROM; default message_id)")
    p.add_argument("--key-header", default=env.get("RABBITMQ_KEY_HEADER") or None, metavar="NAME",
                   help="header holding the event key (env RABBITMQ_KEY_HEADER; default: unkeyed)")
    # String defaults go through type=, so a bad variable is a usage error.
    p.add_argument("--prefetch", type=int, default=env.get("RABBITMQ_PREFETCH", "0"),
                   help="per-queue prefetch; 0: the engine's initial credits split over "
                        "the queues (env RABBITMQ_PREFETCH)")
    p.add_argument("--reconnect-max", type=float,
                   default=env.get("RABBITMQ_RECONNECT_MAX", "5"),
                   help="longest wait between reconnect attempts, seconds (default 5)")
    add_engine_flags(p)
    a = p.parse_args(list(argv))
    queues = a.queue
    if queues is None:
        queues = [q.strip() for q in env.get("RABBITMQ_QUEUES", "").split(",") if q.strip()]
    if not queues:
        p.error("no queue: give --queue NAME or RABBITMQ_QUEUES")
    if a.prefetch < 0 or a.prefetch > MAX_PREFETCH:
        p.error(f"--prefetch must be 0..{MAX_PREFETCH}")
    opts = SourceOptions(
        url=a.url,
        queues=tuple(queues),
        declare=a.declare,
        id_from=a.id_from,
        key_header=a.key_header,
        prefetch=a.prefetch,
        reconnect_max=max(0.1, a.reconnect_max),
    )
    try:
        RabbitMQSource(opts)  # validates
    except ValueError as e:
        p.error(str(e))
    if with_engine:
        return opts, engine_config(p, a, "rabbitmq_source")
    return opts


def add_engine_flags(p: argparse.ArgumentParser) -> None:
    """--engine and --token-env: for a connector started by an operator
    (``listen:`` and ``token_env:`` in the topology). Without them the
    connector reads the environment the engine sets when it spawns it."""
    p.add_argument("--engine", default=None, metavar="URL",
                   help="the engine's listen: address (e.g. tcp://127.0.0.1:7300); "
                        "default: spawned by the engine, which sets WALLAROO_*")
    p.add_argument("--token-env", default="WALLAROO_TOKEN", metavar="VAR",
                   help="with --engine: the variable holding the token (default WALLAROO_TOKEN)")


def engine_config(p: argparse.ArgumentParser, a: argparse.Namespace, program: str):
    if a.engine is None:
        return None
    token = os.environ.get(a.token_env, "")
    if not token:
        p.error(f"--engine needs the token in the environment variable {a.token_env}")
    return ConnectorConfig(address=a.engine, token=token, program=program)


def main(argv: Optional[Sequence[str]] = None) -> int:
    # Every broker failure reaches this code as an exception and is logged
    # once, with a tag; pika's own log lines would say it twice.
    logging.getLogger("pika").setLevel(logging.CRITICAL)
    opts, engine = parse_args(sys.argv[1:] if argv is None else argv, with_engine=True)
    return run_source(RabbitMQSource(opts), engine)


if __name__ == "__main__":
    sys.exit(main())
