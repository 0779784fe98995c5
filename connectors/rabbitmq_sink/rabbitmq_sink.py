#!/usr/bin/env python3
"""RabbitMQ sink connector: publish wallaroo-engine outputs to RabbitMQ.

Every output becomes one persistent message (body = payload) published to
an exchange with a routing key, on a channel in publisher-confirm mode.
``write`` returns only when the broker has confirmed every message of the
batch; a nack, an unroutable message, a timeout or a lost connection make
it raise, and the engine sends the batch again (at-least-once). With
``--exactly-once`` the sink is instead ``RabbitMQTwoPhaseSink``
(rabbitmq_sink_2pc.py): two-phase commit, with epochs prepared on local
disk and published in AMQP transactions with a commit marker. See
README.md beside this file.

Built on ``wallaroo.connector.Sink`` (docs/connectors.md). pika's
BlockingChannel confirms one message at a time (a round trip each, about
2,000 messages/s on loopback); this uses pika's SelectConnection and runs
its I/O loop inside ``write`` until the whole batch is confirmed, so a
batch costs one round trip (about 15,000 messages/s).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from typing import Callable, List, NamedTuple, Optional, Sequence, Set, Tuple

import pika
import pika.exceptions

from broker_retry import Backoff, log
from epoch_store import StoreError
from rabbitmq_sink_2pc import RabbitMQTwoPhaseSink
from wallaroo.connector import EXIT_FAILURE, ConnectorConfig, Output, Sink, run_sink

__all__ = ["RabbitMQSink", "SinkOptions", "SinkError", "make_sink", "parse_args", "main"]

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"


class SinkError(Exception):
    """A batch was not delivered: the engine sends it again."""


class SinkOptions(NamedTuple):
    """What the sink needs to know; ``parse_args`` builds it."""

    url: str = DEFAULT_URL
    # "" is the default exchange, which routes by queue name.
    exchange: str = ""
    routing_key: str = ""
    # Queues to declare (durable) at connect, bound to the exchange with the
    # routing key when the exchange is not the default one.
    declare_queues: Tuple[str, ...] = ()
    # Header that carries the output's key; None: the key is not sent.
    key_header: Optional[str] = None
    # Seconds to wait for the broker's confirms of one batch.
    confirm_timeout: float = 30.0
    # Seconds a write (or a commit) keeps trying to (re)connect before it
    # raises.
    connect_retry: float = 5.0
    heartbeat: int = 60
    # Two-phase commit (RabbitMQTwoPhaseSink) instead of publisher confirms.
    exactly_once: bool = False
    # Where prepared epochs are kept (a directory per instance below it).
    state_dir: str = ""
    # The commit marker queue; "": wallaroo.commits.<exchange or queue>.
    marker_queue: str = ""
    # WALLAROO_INSTANCE: instances above 0 get their own marker queue and
    # state directory.
    instance: int = 0


class RabbitMQSink(Sink):
    """Publishes each batch and waits for the broker's confirms.

    One connection and one confirm-mode channel at a time. Delivery tags of
    a confirm channel count the messages published on it from 1; ``_pending``
    holds the tags of the batch not yet confirmed.
    """

    def __init__(self, options: SinkOptions) -> None:
        if options.exchange == "" and not options.routing_key:
            raise ValueError(
                "the default exchange needs a routing key (the queue name): "
                "give --routing-key or --exchange"
            )
        self.options = options
        self._params = pika.URLParameters(options.url)
        self._params.heartbeat = options.heartbeat
        self._params.socket_timeout = 5
        self._params.blocked_connection_timeout = 30
        self._conn: Optional[pika.SelectConnection] = None
        self._ch = None
        self._ready = False
        # Why the connection or channel went away; None while usable.
        self._broken: Optional[str] = None
        self._last_tag = 0
        self._low = 1  # no tag below this is pending
        self._pending: Set[int] = set()
        self._nacked = 0
        self._returned: List[str] = []
        self._backoff = Backoff()
        # Counters, for tests and the log.
        self.stats = {"batches": 0, "published": 0, "confirmed": 0, "connects": 0, "failures": 0}

    # -- the Sink contract -------------------------------------------------

    def write(self, epoch: int, outputs: List[Output]) -> None:
        if not outputs:
            return
        self._ensure_connected()
        self._nacked = 0
        self._returned = []
        o = self.options
        try:
            for out in outputs:
                headers = None
                if o.key_header is not None and out.key:
                    headers = {o.key_header: out.key}
                props = pika.BasicProperties(
                    delivery_mode=pika.DeliveryMode.Persistent,
                    # AMQP timestamps are whole seconds; outputs carry µs.
                    timestamp=out.event_time // 1_000_000 if out.event_time > 0 else None,
                    headers=headers,
                )
                # mandatory: a message no queue takes comes back (basic.return)
                # instead of being confirmed and dropped.
                self._ch.basic_publish(
                    o.exchange, o.routing_key, out.payload, props, mandatory=True
                )
                self._last_tag += 1
                self._pending.add(self._last_tag)
        except (pika.exceptions.AMQPError, OSError) as e:
            self._fail(f"publishing failed: {_describe(e)}")
        self.stats["published"] += len(outputs)
        done = self._run_until(
            lambda: not self._pending or self._broken is not None, o.confirm_timeout
        )
        if self._broken is not None:
            self._fail(
                f"connection lost with {len(self._pending)} of {len(outputs)} messages "
                f"unconfirmed ({self._broken})"
            )
        if not done:
            self._fail(
                f"{len(self._pending)} of {len(outputs)} messages not confirmed "
                f"within {o.confirm_timeout:g} s"
            )
        if self._nacked:
            # The channel is fine; the broker could not take these (e.g. a
            # queue over its length limit with reject-publish).
            self.stats["failures"] += 1
            raise SinkError(f"the broker refused (nack) {self._nacked} of {len(outputs)} messages")
        if self._returned:
            self.stats["failures"] += 1
            raise SinkError(
                f"{len(self._returned)} of {len(outputs)} messages could not be routed "
                f"to any queue ({self._returned[0]}): declare and bind the queue"
            )
        self.stats["batches"] += 1
        self.stats["confirmed"] += len(outputs)

    def close(self) -> None:
        self._disconnect()
        log("RMQ-CLOSE " + ", ".join(f"{k} {v}" for k, v in sorted(self.stats.items())))

    # -- connection --------------------------------------------------------

    def _ensure_connected(self) -> None:
        if self._conn is not None and self._broken is None:
            # Take in what arrived since the last batch (a close from a
            # broker that went away, heartbeats) before publishing into it.
            self._run_until(lambda: True, 0)
            if self._broken is None:
                return
            log(f"RMQ-LOST connection lost between batches ({self._broken})")
            self._disconnect()
        self._backoff.connect(self._connect, self.options.connect_retry,
                              self.stats, "failures", SinkError)

    def _connect(self) -> Optional[str]:
        """Opens a connection and a confirm channel; None, or why not."""
        self._ready = False
        self._broken = None
        self._last_tag = 0
        self._low = 1
        self._pending = set()
        self._conn = pika.SelectConnection(
            self._params,
            on_open_callback=self._on_open,
            on_open_error_callback=self._on_open_error,
            on_close_callback=self._on_conn_closed,
        )
        ok = self._run_until(lambda: self._ready or self._broken is not None, 15.0)
        if self._ready and self._broken is None:
            self.stats["connects"] += 1
            log(
                f"RMQ-CONNECT publishing to exchange {self.options.exchange!r} "
                f"with routing key {self.options.routing_key!r}"
            )
            return None
        why = self._broken or ("timed out" if not ok else "failed")
        self._disconnect()
        return why

    def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        self._ch = None
        self._ready = False
        if conn is None:
            return
        try:
            if conn.is_open:
                conn.close()
            if not conn.is_closed:
                # Let the close handshake finish (bounded).
                self._conn = conn
                self._run_until(lambda: conn.is_closed, 2.0)
                self._conn = None
        except Exception:
            self._conn = None

    def _run_until(self, done: Callable[[], bool], timeout: float) -> bool:
        """Runs the connection's I/O loop until done() or timeout; returns
        done(). A timeout of 0 processes what is ready and returns."""
        conn = self._conn
        if conn is None:
            return done()
        loop = conn.ioloop
        deadline = time.monotonic() + timeout
        first = True
        while first or not done():
            first = False
            remaining = max(0.0, deadline - time.monotonic())
            if remaining <= 0 and timeout > 0:
                break
            # Callbacks stop the loop when something happens; the timer
            # bounds each run.
            t = loop.call_later(min(remaining, 1.0), loop.stop)
            loop.start()
            loop.remove_timeout(t)
            if timeout == 0:
                break
        return done()

    def _wake(self) -> None:
        if self._conn is not None:
            self._conn.ioloop.stop()

    # -- callbacks (run inside _run_until) -----------------------------------

    def _on_open(self, conn) -> None:
        conn.channel(on_open_callback=self._on_channel_open)

    def _on_open_error(self, _conn, error) -> None:
        self._broken = _describe(error)
        self._wake()

    def _on_conn_closed(self, _conn, reason) -> None:
        if self._broken is None:
            self._broken = _describe(reason)
        self._wake()

    def _on_channel_open(self, ch) -> None:
        self._ch = ch
        ch.add_on_close_callback(self._on_channel_closed)
        ch.add_on_return_callback(self._on_return)
        self._declare(list(self.options.declare_queues))

    def _declare(self, queues: List[str]) -> None:
        """Declares (and binds) the queues one after the other, then turns
        confirms on."""
        o = self.options
        if not queues:
            self._ch.confirm_delivery(
                ack_nack_callback=self._on_confirm, callback=self._on_confirm_ok
            )
            return
        q, rest = queues[0], queues[1:]
        if o.exchange == "":
            then = lambda _frame: self._declare(rest)  # noqa: E731
        else:
            then = lambda _frame: self._ch.queue_bind(  # noqa: E731
                q, o.exchange, routing_key=o.routing_key, callback=lambda _f: self._declare(rest)
            )
        self._ch.queue_declare(q, durable=True, callback=then)

    def _on_confirm_ok(self, _frame) -> None:
        self._ready = True
        self._wake()

    def _on_channel_closed(self, _ch, reason) -> None:
        # A channel error (e.g. the exchange does not exist) ends the
        # channel; start over on a new connection.
        if self._broken is None:
            self._broken = f"channel closed: {_describe(reason)}"
        self._wake()

    def _on_return(self, _ch, method, _props, _body) -> None:
        self._returned.append(f"{method.reply_code} {method.reply_text}")

    def _on_confirm(self, frame) -> None:
        m = frame.method
        if isinstance(m, pika.spec.Basic.Nack):
            n_before = len(self._pending)
            self._settle(m.delivery_tag, m.multiple)
            self._nacked += n_before - len(self._pending)
        else:
            self._settle(m.delivery_tag, m.multiple)
        if not self._pending:
            self._wake()

    def _settle(self, tag: int, multiple: bool) -> None:
        if multiple:
            for t in range(self._low, tag + 1):
                self._pending.discard(t)
            self._low = max(self._low, tag + 1)
        else:
            self._pending.discard(tag)

    def _fail(self, why: str) -> None:
        """The connection cannot be trusted any more: drop it and raise."""
        self.stats["failures"] += 1
        log(f"RMQ-LOST {why}")
        self._disconnect()
        raise SinkError(why)


def _describe(e: object) -> str:
    if isinstance(e, BaseException):
        text = str(e)
        return f"{type(e).__name__}: {text}" if text else type(e).__name__
    return str(e)


# -- command line ----------------------------------------------------------------


def make_sink(options: SinkOptions) -> Sink:
    """The sink the options ask for: RabbitMQTwoPhaseSink with
    ``exactly_once``, RabbitMQSink otherwise."""
    if options.exactly_once:
        return RabbitMQTwoPhaseSink(options)
    return RabbitMQSink(options)


def parse_args(argv: Sequence[str], with_engine: bool = False):
    """Options from flags, then the environment, then defaults. With
    ``with_engine``, returns (options, ConnectorConfig or None)."""
    env = os.environ
    p = argparse.ArgumentParser(
        prog="rabbitmq_sink.py",
        description="Publish wallaroo-engine outputs to RabbitMQ: with publisher confirms "
                    "(at-least-once), or exactly once with --exactly-once.",
    )
    p.add_argument("--url", default=env.get("RABBITMQ_URL", DEFAULT_URL),
                   help="AMQP URL (env RABBITMQ_URL; default %(default)s)")
    p.add_argument("--exchange", default=env.get("RABBITMQ_EXCHANGE", ""),
                   help="exchange to publish to (env RABBITMQ_EXCHANGE; default: the default exchange)")
    p.add_argument("--routing-key", default=env.get("RABBITMQ_ROUTING_KEY", ""),
                   help="routing key; the queue name with the default exchange (env RABBITMQ_ROUTING_KEY)")
    p.add_argument("--declare-queue", action="append", default=None, metavar="NAME",
                   help="declare this durable queue (and bind it to --exchange with "
                        "--routing-key), repeatable (env RABBITMQ_DECLARE_QUEUES, comma-separated)")
    p.add_argument("--key-header", default=env.get("RABBITMQ_KEY_HEADER") or None, metavar="NAME",
                   help="send the output's key in this header (env RABBITMQ_KEY_HEADER)")
    # String defaults go through type=, so a bad variable is a usage error.
    p.add_argument("--confirm-timeout", type=float,
                   default=env.get("RABBITMQ_CONFIRM_TIMEOUT", "30"),
                   help="seconds to wait for a batch's confirms (default 30)")
    p.add_argument("--connect-retry", type=float,
                   default=env.get("RABBITMQ_CONNECT_RETRY", "5"),
                   help="seconds a batch keeps trying to reach the broker before failing (default 5)")
    p.add_argument("--exactly-once", action="store_true",
                   default=env.get("RABBITMQ_EXACTLY_ONCE", "").strip().lower()
                   in ("1", "true", "yes", "on"),
                   help="two-phase commit: epochs prepared in --state-dir, published in AMQP "
                        "transactions with a commit marker (env RABBITMQ_EXACTLY_ONCE=1)")
    p.add_argument("--state-dir", default=env.get("RABBITMQ_STATE_DIR", ""), metavar="DIR",
                   help="with --exactly-once: where prepared epochs are kept, fsync'd "
                        "(env RABBITMQ_STATE_DIR)")
    p.add_argument("--marker-queue", default=env.get("RABBITMQ_MARKER_QUEUE", ""), metavar="NAME",
                   help="with --exactly-once: the commit marker queue (env RABBITMQ_MARKER_QUEUE; "
                        "default wallaroo.commits.<exchange, or the queue>)")
    p.add_argument("--engine", default=None, metavar="URL",
                   help="the engine's listen: address (e.g. tcp://127.0.0.1:7301); "
                        "default: spawned by the engine, which sets WALLAROO_*")
    p.add_argument("--token-env", default="WALLAROO_TOKEN", metavar="VAR",
                   help="with --engine: the variable holding the token (default WALLAROO_TOKEN)")
    a = p.parse_args(list(argv))
    queues = a.declare_queue
    if queues is None:
        queues = [q.strip() for q in env.get("RABBITMQ_DECLARE_QUEUES", "").split(",") if q.strip()]
    if a.confirm_timeout <= 0:
        p.error("--confirm-timeout must be > 0")
    if a.exactly_once and not a.state_dir:
        p.error("--exactly-once needs --state-dir DIR (or RABBITMQ_STATE_DIR)")
    if not a.exactly_once and (a.state_dir or a.marker_queue):
        p.error("--state-dir and --marker-queue go with --exactly-once")
    try:
        instance = int(env.get("WALLAROO_INSTANCE") or "0")
    except ValueError:
        instance = -1
    if instance < 0:
        p.error(f"WALLAROO_INSTANCE={env.get('WALLAROO_INSTANCE')!r} is not an integer >= 0")
    opts = SinkOptions(
        url=a.url,
        exchange=a.exchange,
        routing_key=a.routing_key,
        declare_queues=tuple(queues),
        key_header=a.key_header,
        confirm_timeout=a.confirm_timeout,
        connect_retry=max(0.0, a.connect_retry),
        exactly_once=a.exactly_once,
        state_dir=os.path.abspath(a.state_dir) if a.state_dir else "",
        marker_queue=a.marker_queue,
        instance=instance,
    )
    try:
        RabbitMQSink(opts)  # validates (without touching the state directory)
    except ValueError as e:
        p.error(str(e))
    if not with_engine:
        return opts
    if a.engine is None:
        return opts, None
    token = env.get(a.token_env, "")
    if not token:
        p.error(f"--engine needs the token in the environment variable {a.token_env}")
    return opts, ConnectorConfig(address=a.engine, token=token, program="rabbitmq_sink")


def main(argv: Optional[Sequence[str]] = None) -> int:
    # Every broker failure reaches this code as an exception and is logged
    # once, with a tag; pika's own log lines would say it twice.
    logging.getLogger("pika").setLevel(logging.CRITICAL)
    opts, engine = parse_args(sys.argv[1:] if argv is None else argv, with_engine=True)
    try:
        sink = make_sink(opts)
    except StoreError as e:
        # Most likely a run of this instance that has not exited yet: the
        # engine starts this one again, with backoff.
        log(f"RMQ-STATE {e}")
        return EXIT_FAILURE
    return run_sink(sink, engine)


if __name__ == "__main__":
    sys.exit(main())
