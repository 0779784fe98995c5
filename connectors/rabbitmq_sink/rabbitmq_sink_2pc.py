"""Exactly-once RabbitMQ sink: the engine's two-phase commit (protocol
6.4) with a local epoch store, AMQP transactions and a commit marker.

- ``write(epoch, outputs)`` holds the outputs in memory, per epoch.
- ``prepare(epoch, incarnation)`` writes them to a file of their own under
  the state directory, fsync'd (epoch_store.py), with a random id for this
  preparation. Nothing touches the broker: a prepare succeeds whenever the
  disk does.
- ``commit(epoch)`` publishes every output of the epoch in one AMQP
  transaction (``tx.select`` ... ``tx.commit``); once the broker has
  answered Commit-Ok (the outputs are on its disk), it publishes a marker
  message ``{"epoch", "incarnation", "id", ...}`` to the marker queue in a
  second transaction, then removes the file. The marker queue is durable
  with ``x-max-length: 1``: it holds the marker of the last epoch
  committed.
- ``abort(epoch)`` removes the file.
- ``in_doubt()`` lists the files, except one whose id the marker names:
  that epoch was committed, and this process died before it removed the
  file; the file is removed instead.

The marker is what makes it exactly-once: after a crash between the
marker's commit and the file's removal, the epoch is not published again,
neither by ``in_doubt`` (not listed) nor by ``commit`` (which checks the
marker first). Two transactions, outputs first, because RabbitMQ's
transactions are not atomic (not even within one queue: its "Broker
Semantics" page): a broker stopped in the middle of one ``tx.commit`` was
seen to keep the marker and lose some of the outputs. In this order no
failure loses an output; a failure between the two commits publishes the
epoch again, with the same ``wallaroo-epoch``/``wallaroo-seq`` headers
and message ids, so a consumer can drop the repeats. Markers are matched by the preparation's id, not by
"epoch <= the last committed epoch": the id names one file exactly, so the
check holds even if epoch numbers went backwards (the engine derives them
from its start time) or two sink instances shared a queue by mistake.

**Fencing.** Before it reads the marker, the sink declares an exclusive
queue ``<marker queue>.lock`` on its connection. The broker lets only one
connection hold it, and frees it only when that connection has closed,
after its channels have handled what they had received, so a marker read
on a new connection is never overtaken by a ``tx.commit`` still on its way
over an old one (a connection given up on a timeout, a broker blocked by
an alarm), and a second sink using the same marker queue fails instead of
corrupting it.

See README.md beside this file for the guarantee and its limits.
"""

from __future__ import annotations

import collections
import json
import os
import sys
import time
from typing import TYPE_CHECKING, Dict, List, Optional, Set, Tuple

import pika
import pika.exceptions

from broker_retry import Backoff, log
from epoch_store import EpochStore, PreparedEpoch
from wallaroo.connector import Output, TwoPhaseSink

if TYPE_CHECKING:
    from rabbitmq_sink import SinkOptions

__all__ = ["RabbitMQTwoPhaseSink", "ExactlyOnceError", "marker_queue_name", "instance_dir"]

BROKER_ERRORS = (pika.exceptions.AMQPError, OSError)
# in_doubt answers the engine's Welcome: it waits this long at most for the
# broker, then lists every prepared epoch (commit checks the marker anyway).
IN_DOUBT_CONNECT = 1.0
RESOURCE_LOCKED = 405
NOT_FOUND = 404
EPOCH_HEADER = "wallaroo-epoch"
SEQ_HEADER = "wallaroo-seq"


class ExactlyOnceError(Exception):
    """The sink cannot do what the engine asked now (the broker is away, a
    commit's outcome is unknown): the SDK reports it, and the epoch stays
    prepared for the engine to decide again after the reconnect."""


def marker_queue_name(exchange: str, routing_key: str, marker_queue: str, instance: int) -> str:
    """``marker_queue``, or ``wallaroo.commits.<exchange, or the queue of the
    default exchange>``; ``.<instance>`` appended for instances above 0, so
    that each instance of a sink has its own."""
    base = marker_queue or "wallaroo.commits." + (exchange or routing_key)
    return base if instance == 0 else f"{base}.{instance}"


def instance_dir(state_dir: str, instance: int) -> str:
    """Where one sink instance keeps its prepared epochs."""
    return os.path.join(state_dir, f"instance-{instance}")


class RabbitMQTwoPhaseSink(TwoPhaseSink):
    """Publishes committed epochs exactly once (module docstring).

    One connection with two channels: ``ctl`` (the lock, declarations,
    marker reads) and ``tx`` (transactional publishing). ``_committed`` holds
    the preparation ids the marker queue shows committed; it is read when
    the connection opens and kept up to date by this sink's own commits,
    which are the only writes to the marker queue while it holds the lock.
    """

    def __init__(self, options: "SinkOptions") -> None:
        if options.exchange == "" and not options.routing_key:
            raise ValueError(
                "the default exchange needs a routing key (the queue name): "
                "give --routing-key or --exchange"
            )
        if not options.state_dir:
            raise ValueError("--exactly-once needs --state-dir DIR")
        self.options = options
        self.marker_queue = marker_queue_name(
            options.exchange, options.routing_key, options.marker_queue, options.instance
        )
        self.lock_queue = self.marker_queue + ".lock"
        self._params = pika.URLParameters(options.url)
        self._params.heartbeat = options.heartbeat
        self._params.socket_timeout = 5
        self._params.stack_timeout = 5
        self._params.blocked_connection_timeout = 30
        # Raises StoreError (directory unusable or locked by another process).
        self._store = EpochStore(instance_dir(options.state_dir, options.instance))
        self._held: Dict[int, List[Output]] = {}
        self._conn: Optional[pika.BlockingConnection] = None
        self._ctl = None
        self._tx = None
        self._committed: Set[str] = set()
        self._returned: List[str] = []
        self._backoff = Backoff()
        # Counters, for tests and the log.
        self.stats: collections.Counter = collections.Counter()

    # -- the TwoPhaseSink contract ---------------------------------------

    def write(self, epoch: int, outputs: List[Output]) -> None:
        self._held.setdefault(epoch, []).extend(outputs)

    def prepare(self, epoch: int, incarnation: int) -> None:
        self._store.save(epoch, incarnation, self._held.get(epoch, ()))
        self._held.pop(epoch, None)
        self.stats["prepared"] += 1

    def commit(self, epoch: int) -> None:
        self._held.pop(epoch, None)
        prepared = self._store.load(epoch)
        if prepared is None:
            # Commit is sent only for an epoch this sink said Prepared, and
            # its file goes only after the broker's commit: the state
            # directory was lost or emptied under the sink.
            self.stats["commit_missing"] += 1
            log(
                f"RMQ-COMMIT-MISSING epoch {epoch} is not prepared in "
                f"{self._store.directory}: nothing to publish"
            )
            return
        self._ensure_connected(self.options.connect_retry)
        if prepared.id not in self._committed:
            self._publish(prepared)
        else:
            # The broker committed it before a crash, and this process died
            # before it removed the file.
            self.stats["already_committed"] += 1
            log(f"RMQ-RECOVERED epoch {epoch} is already committed: not published again")
        self._store.remove(epoch)

    def abort(self, epoch: int) -> None:
        self._held.pop(epoch, None)
        if self._store.remove(epoch):
            self.stats["aborted"] += 1

    def in_doubt(self) -> List[Tuple[int, int]]:
        # A new engine connection: epochs not prepared on the old one are
        # abandoned, and the engine sends their outputs again.
        self._held.clear()
        prepared = self._store.list()
        if not prepared:
            return []
        try:
            self._ensure_connected(min(self.options.connect_retry, IN_DOUBT_CONNECT))
        except ExactlyOnceError as e:
            log(
                f"RMQ-IN-DOUBT cannot read the commit marker ({e}): listing every "
                f"prepared epoch; a commit checks the marker before it publishes"
            )
            return [(p.epoch, p.incarnation) for p in prepared]
        doubts = []
        for p in prepared:
            if p.id in self._committed:
                self.stats["already_committed"] += 1
                log(f"RMQ-RECOVERED epoch {p.epoch} was committed before a crash: file removed")
                self._store.remove(p.epoch)
            else:
                doubts.append((p.epoch, p.incarnation))
        return doubts

    def close(self) -> None:
        self._disconnect()
        self._store.close()
        log("RMQ-CLOSE " + ", ".join(f"{k} {v}" for k, v in sorted(self.stats.items())))

    def prepared_epochs(self) -> List[int]:
        """The epochs prepared on disk (for tests and operators)."""
        return [p.epoch for p in self._store.list()]

    # -- publishing --------------------------------------------------------

    def _publish(self, prepared: PreparedEpoch) -> None:
        """Publishes the epoch in one transaction, then its marker in a
        second one (module docstring: why not one)."""
        o = self.options
        n = len(prepared.outputs)
        marker = json.dumps({
            "epoch": prepared.epoch,
            "incarnation": prepared.incarnation,
            "id": prepared.id,
            "outputs": n,
            "instance": o.instance,
        }).encode()
        self._returned = []
        stage = "outputs"
        try:
            for seq, out in enumerate(prepared.outputs):
                headers = {EPOCH_HEADER: prepared.epoch, SEQ_HEADER: seq}
                if o.key_header is not None and out.key:
                    headers[o.key_header] = out.key
                props = pika.BasicProperties(
                    delivery_mode=pika.DeliveryMode.Persistent,
                    # The same on every publish of this output: what a
                    # consumer deduplicates on (module docstring).
                    message_id=f"{prepared.epoch}.{seq}",
                    # AMQP timestamps are whole seconds; outputs carry µs.
                    timestamp=out.event_time // 1_000_000 if out.event_time > 0 else None,
                    headers=headers,
                )
                # mandatory: an output no queue takes comes back (logged)
                # instead of vanishing without a word.
                self._tx.basic_publish(o.exchange, o.routing_key, out.payload, props, mandatory=True)
            self._tx.tx_commit()
            stage = "marker"
            self._tx.basic_publish(
                "",
                self.marker_queue,
                marker,
                pika.BasicProperties(
                    delivery_mode=pika.DeliveryMode.Persistent,
                    content_type="application/json",
                ),
                mandatory=True,
            )
            self._tx.tx_commit()
        except BROKER_ERRORS as e:
            self.stats["failures"] += 1
            self._disconnect()
            if stage == "marker":
                self.stats["marker_failures"] += 1
                log(
                    f"RMQ-MARKER-LOST epoch {prepared.epoch}: its outputs are committed, "
                    f"its marker may not be; unless the marker got through, the epoch "
                    f"will be published again (same message ids)"
                )
            raise ExactlyOnceError(
                f"commit of epoch {prepared.epoch} ({n} outputs) failed at the {stage}: "
                f"{_describe(e)}; it stays prepared, and after the reconnect the marker "
                f"tells whether the broker committed it"
            ) from None
        self._committed.add(prepared.id)
        self.stats["committed"] += 1
        self.stats["published"] += n
        try:
            # basic.return frames come before Commit-Ok; pika hands them to
            # the callback here.
            self._conn.process_data_events(0)
        except BROKER_ERRORS as e:
            log(f"RMQ-LOST after the commit of epoch {prepared.epoch} ({_describe(e)})")
            self._disconnect()
        if self._returned:
            self.stats["unroutable"] += len(self._returned)
            log(
                f"RMQ-UNROUTABLE epoch {prepared.epoch}: {len(self._returned)} of {n + 1} "
                f"messages came back unroutable ({self._returned[0]}) and were dropped "
                f"by the broker; the epoch is committed"
            )

    def _on_return(self, _ch, method, _props, _body) -> None:
        what = "the marker" if method.routing_key == self.marker_queue else "an output"
        self._returned.append(f"{what}: {method.reply_code} {method.reply_text}")

    # -- connection --------------------------------------------------------

    def _ensure_connected(self, budget: float) -> None:
        """A usable connection holding the lock, with the marker read;
        raises ExactlyOnceError after ``budget`` seconds of trying."""
        if self._conn is not None:
            why = "closed"
            try:
                # Takes in what came since the last use (a close from a broker
                # that went away, heartbeats) before relying on it. (pika
                # raises ValueError when asked to process a closed one.)
                if self._conn.is_open:
                    self._conn.process_data_events(0)
                    if self._conn.is_open and self._ctl.is_open and self._tx.is_open:
                        return
            except BROKER_ERRORS as e:
                why = _describe(e)
            log(f"RMQ-LOST connection lost between epochs ({why})")
            self._disconnect()
        self._backoff.connect(self._connect, budget,
                              self.stats, "connect_failures", ExactlyOnceError)

    def _connect(self) -> Optional[str]:
        """Connects, takes the lock, declares, reads the marker; None, or
        why not."""
        o = self.options
        conn = None
        try:
            conn = pika.BlockingConnection(self._params)
            ctl = conn.channel()
            ctl.queue_declare(self.lock_queue, exclusive=True)
            for q in o.declare_queues:
                ctl.queue_declare(q, durable=True)
                if o.exchange:
                    ctl.queue_bind(q, o.exchange, routing_key=o.routing_key)
            # Where the outputs go must exist now: a transaction cannot be
            # checked for routing before it commits.
            if o.exchange:
                ctl.exchange_declare(o.exchange, passive=True)
            else:
                ctl.queue_declare(o.routing_key, passive=True)
            ctl.queue_declare(self.marker_queue, durable=True, arguments={"x-max-length": 1})
            committed, last = self._read_markers(ctl)
            tx = conn.channel()
            tx.add_on_return_callback(self._on_return)
            tx.tx_select()
        except BROKER_ERRORS as e:
            if conn is not None:
                try:
                    conn.close()
                except Exception:
                    pass  # already gone
            return self._explain(e)
        self._conn, self._ctl, self._tx = conn, ctl, tx
        self._committed = committed
        self.stats["connects"] += 1
        log(
            f"RMQ-CONNECT publishing to exchange {o.exchange!r} with routing key "
            f"{o.routing_key!r} in transactions; marker queue {self.marker_queue!r} "
            f"({'last committed epoch %s' % last if last is not None else 'empty'})"
        )
        return None

    def _read_markers(self, ctl) -> Tuple[Set[str], Optional[int]]:
        """Every marker in the queue (one, normally), left in place: the ids
        they name, and the last epoch among them."""
        ids: Set[str] = set()
        last = None
        taken = 0
        while True:
            method, _props, body = ctl.basic_get(self.marker_queue, auto_ack=False)
            if method is None:
                break
            taken += 1
            try:
                m = json.loads(body)
                ids.add(str(m["id"]))
                last = m["epoch"] if last is None else max(last, m["epoch"])
            except (ValueError, KeyError, TypeError):
                log(f"RMQ-MARKER ignoring a message in {self.marker_queue!r} that is not a marker")
        if taken:
            ctl.basic_nack(delivery_tag=0, multiple=True, requeue=True)
        return ids, last

    def _explain(self, e: BaseException) -> str:
        why = _describe(e)
        code = getattr(e, "reply_code", None)
        if code == RESOURCE_LOCKED and self.lock_queue in str(e):
            return (
                f"another connection holds {self.lock_queue!r}: an earlier run of "
                f"this sink instance the broker has not closed yet, or another sink "
                f"using the marker queue {self.marker_queue!r} (give each its own "
                f"--marker-queue)"
            )
        if code == NOT_FOUND and not self.options.exchange:
            return f"{why} (declare the queue {self.options.routing_key!r}, or --declare-queue it)"
        return why

    def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        self._ctl = self._tx = None
        self._committed = set()
        if conn is not None:
            try:
                if conn.is_open:
                    conn.close()
            except Exception:
                pass  # already gone


def _describe(e: object) -> str:
    if isinstance(e, BaseException):
        text = str(e)
        return f"{type(e).__name__}: {text}" if text else type(e).__name__
    return str(e)
