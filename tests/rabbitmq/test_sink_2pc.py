"""The exactly-once RabbitMQ sink (--exactly-once, RabbitMQTwoPhaseSink):
driven directly as the SDK drives it (write, prepare, commit, abort,
in_doubt, close), and as a process against the SDK's fake engine, with the
real broker. A "crash" of a sink object is its close() at the point of the
crash: close touches no file, so what it leaves is what a killed process
leaves."""

import json
import os
import shutil
import signal
import tempfile
import time

import pika.exceptions
import pytest

import broker
from epoch_store import EpochStore, StoreError
from rabbitmq_sink import SinkOptions, make_sink, parse_args
from rabbitmq_sink_2pc import ExactlyOnceError, RabbitMQTwoPhaseSink
from wallaroo.connector import Output

connector_engine = pytest.importorskip("connector_engine")
from connector_engine import FakeEngine, finish, spawn, wait_line  # noqa: E402
from wallaroo._pb import wallaroo_pb2 as pb  # noqa: E402

SINK = os.path.join(broker.ROOT, "connectors", "rabbitmq_sink", "rabbitmq_sink.py")
SINK_DIR = os.path.dirname(SINK)
TIMEOUT = 10.0
E = 1_700_000_000_000_001  # epochs grow from the engine's start time (µs)


class Crash(BaseException):
    """Stands for the process dying at this point."""


def outputs(tag, n):
    return [Output(b"", b"%s-%d" % (tag, i), 0) for i in range(n)]


@pytest.fixture
def state():
    d = tempfile.mkdtemp(prefix="wl-2pc-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def sinks(rabbit, queue, state):
    """new(**options): a RabbitMQTwoPhaseSink publishing to ``queue`` with
    its state in ``state``; every one is closed at the end."""
    made = []

    def new(**kw):
        kw.setdefault("url", rabbit.url)
        kw.setdefault("routing_key", queue)
        kw.setdefault("connect_retry", 0.5)
        kw.setdefault("state_dir", state)
        sink = RabbitMQTwoPhaseSink(SinkOptions(exactly_once=True, **kw))
        made.append(sink)
        return sink

    yield new
    for sink in made:
        sink.close()
    try:
        broker.delete(rabbit.url, "wallaroo.commits." + queue)
    except Exception:
        pass  # the broker is down at the end of a failed restart test


def bodies(rabbit, queue):
    return [m.body for m in broker.drain(rabbit.url, queue)]


def markers(rabbit, queue):
    """The marker queue's messages, left in place."""
    with broker.connect(rabbit.url) as c:
        ch = c.channel()
        got = []
        while True:
            method, _, body = ch.basic_get("wallaroo.commits." + queue)
            if method is None:
                break
            got.append(json.loads(body))
        ch.basic_nack(0, multiple=True, requeue=True)
    return got


def crash_on_remove(sink):
    """The next file removal "crashes" the sink instead."""
    def remove(epoch):
        raise Crash(f"killed before removing epoch {epoch}")

    sink._store.remove = remove


# -- the class, against the broker -------------------------------------------


def test_commit_publishes_the_epoch_once_with_its_marker_and_removes_its_file(
    rabbit, queue, sinks
):
    sink = sinks(key_header="k")
    sink.write(E, outputs(b"a", 3))
    sink.write(E, [Output(b"key", b"a-3", 1_700_000_000_123_456)])
    sink.prepare(E, 7)
    assert sink.prepared_epochs() == [E]
    assert broker.ready_count(rabbit.url, queue) == 0  # durable, not visible
    sink.commit(E)
    assert sink.prepared_epochs() == []
    sink.write(E + 1, outputs(b"b", 1))
    sink.prepare(E + 1, 7)
    sink.commit(E + 1)
    got = broker.drain(rabbit.url, queue)
    assert [m.body for m in got] == [b"a-0", b"a-1", b"a-2", b"a-3", b"b-0"]
    assert all(m.properties.delivery_mode == 2 for m in got)
    # (epoch, seq) names an output for good: a consumer can deduplicate.
    assert [(m.properties.headers["wallaroo-epoch"], m.properties.headers["wallaroo-seq"])
            for m in got] == [(E, 0), (E, 1), (E, 2), (E, 3), (E + 1, 0)]
    assert got[3].properties.headers["k"] == b"key"
    assert got[3].properties.timestamp == 1_700_000_000
    # x-max-length 1: only the last commit's marker is kept.
    (marker,) = markers(rabbit, queue)
    assert (marker["epoch"], marker["incarnation"], marker["outputs"]) == (E + 1, 7, 1)
    assert sink.stats["committed"] == 2 and sink.stats["published"] == 5


def test_abort_publishes_nothing_and_removes_the_epoch(rabbit, queue, sinks):
    sink = sinks()
    sink.write(E, outputs(b"a", 2))
    sink.prepare(E, 7)
    sink.abort(E)
    sink.write(E + 1, outputs(b"b", 2))  # held, never prepared
    sink.abort(E + 1)
    assert sink.prepared_epochs() == [] and sink.in_doubt() == []
    sink.write(E + 2, outputs(b"c", 1))
    sink.prepare(E + 2, 7)
    sink.commit(E + 2)
    assert bodies(rabbit, queue) == [b"c-0"]  # nothing of E or E + 1


@pytest.mark.parametrize("meets_it_in", ["in_doubt", "commit"])
def test_a_crash_between_tx_commit_and_the_file_removal_does_not_publish_twice(
    rabbit, queue, sinks, meets_it_in
):
    first = sinks()
    first.write(E, outputs(b"a", 3))
    first.prepare(E, 7)
    crash_on_remove(first)
    with pytest.raises(Crash):
        first.commit(E)  # the broker committed; the file is still there
    first.close()
    again = sinks()
    assert again.prepared_epochs() == [E]
    if meets_it_in == "in_doubt":
        # The marker names this preparation: committed, not listed.
        assert again.in_doubt() == []
    else:
        # However the engine asks, the marker is checked before publishing.
        again.commit(E)
    assert again.prepared_epochs() == []
    assert again.stats["already_committed"] == 1 and again.stats["published"] == 0
    assert bodies(rabbit, queue) == [b"a-0", b"a-1", b"a-2"]


def test_in_doubt_lists_the_prepared_epochs_not_committed_with_their_incarnations(
    rabbit, queue, sinks
):
    first = sinks()
    for epoch, incarnation in ((E, 5), (E + 1, 6), (E + 2, 6), (E + 3, 6)):
        first.write(epoch, outputs(b"%d" % (epoch - E), 1))
        first.prepare(epoch, incarnation)
    first.commit(E + 1)
    crash_on_remove(first)
    with pytest.raises(Crash):
        first.commit(E + 2)
    first.close()
    again = sinks()
    # E + 1 is done, E + 2 was committed before the crash; E and E + 3 are
    # in doubt. E is below the last committed epoch and still listed: the
    # marker is matched by its preparation id, not by epoch order.
    assert again.in_doubt() == [(E, 5), (E + 3, 6)]
    assert again.prepared_epochs() == [E, E + 3]
    # The engine decides: commit one, abort the other.
    again.commit(E + 3)
    again.abort(E)
    assert again.in_doubt() == []
    assert bodies(rabbit, queue) == [b"1-0", b"2-0", b"3-0"]


def test_in_doubt_drops_what_was_written_and_not_prepared(rabbit, queue, sinks):
    sink = sinks()
    sink.write(E, outputs(b"old-connection", 2))
    assert sink.in_doubt() == []  # a new engine connection: E is sent again
    sink.write(E, outputs(b"a", 1))
    sink.prepare(E, 7)
    sink.commit(E)
    assert bodies(rabbit, queue) == [b"a-0"]


@pytest.mark.parametrize("lost", ["outputs-before", "outputs-after", "marker-before",
                                  "marker-after"])
def test_a_commit_whose_outcome_is_unknown_is_settled_by_the_marker(rabbit, queue, sinks, lost):
    """The connection dies around one of the two tx.commits (the outputs',
    then the marker's): before it reached the broker, or after, with its
    Commit-Ok lost. Only a marker that got through keeps the epoch from
    being published again; a repeat carries the same message ids."""
    sink = sinks()
    sink.write(E, outputs(b"a", 2))
    sink.prepare(E, 7)
    sink.in_doubt()  # connects
    tx = sink._tx
    real = tx.tx_commit
    which, when = lost.split("-")
    commits = []

    def tx_commit():
        commits.append(1)
        if (len(commits) == 1) == (which == "outputs"):
            if when == "after":
                real()
            raise pika.exceptions.StreamLostError("test: connection lost")
        real()

    tx.tx_commit = tx_commit
    with pytest.raises(ExactlyOnceError, match="failed at the %s" % which):
        sink.commit(E)
    assert sink.prepared_epochs() == [E]
    # The SDK gives the engine connection up; on the next one:
    doubts = sink.in_doubt()
    if lost == "marker-after":
        assert doubts == []
    else:
        assert doubts == [(E, 7)]
        sink.commit(E)
    got = broker.drain(rabbit.url, queue)
    ids = ["%d.0" % E, "%d.1" % E]
    if lost in ("outputs-after", "marker-before"):
        # The outputs were committed, the marker was not: the epoch is
        # published again, the same ids twice (README: the repeat).
        assert [m.message_id for m in got] == ids + ids
    else:
        assert [m.message_id for m in got] == ids
    assert [m.body for m in got][:2] == [b"a-0", b"a-1"]
    assert sink.prepared_epochs() == []


def test_a_connection_closed_between_prepare_and_commit_is_reopened(rabbit, queue, sinks):
    sink = sinks()
    sink.write(E, outputs(b"a", 1))
    sink.prepare(E, 7)
    sink.commit(E)
    sink.write(E + 1, outputs(b"b", 1))
    sink.prepare(E + 1, 7)
    rabbit.rabbitmqctl("close_all_connections", "test")

    def closed():
        try:
            if sink._conn.is_open:
                sink._conn.process_data_events(0)
        except pika.exceptions.AMQPError:
            return True
        return not sink._conn.is_open

    broker.wait_for(closed, what="the sink to see its connection closed")
    sink.commit(E + 1)
    assert sink.stats["connects"] == 2
    assert bodies(rabbit, queue) == [b"a-0", b"b-0"]


def test_broker_restart_between_prepare_and_commit(rabbit, queue, sinks):
    sink = sinks()
    sink.write(E, outputs(b"a", 50))
    sink.prepare(E, 7)
    sink.commit(E)
    sink.write(E + 1, outputs(b"b", 50))
    sink.prepare(E + 1, 7)
    rabbit.stop_app()
    try:
        with pytest.raises(ExactlyOnceError, match="cannot reach the broker"):
            sink.commit(E + 1)  # the SDK reports it; the engine reconnects
        # Without the broker, in_doubt cannot read the marker: it lists
        # every prepared epoch, and commit checks the marker later.
        t = time.monotonic()
        assert sink.in_doubt() == [(E + 1, 7)]
        assert time.monotonic() - t < 3
    finally:
        rabbit.start_app()
    assert sink.in_doubt() == [(E + 1, 7)]  # the marker: not committed
    sink.commit(E + 1)
    # The committed epoch survived the restart (persistent, durable), and
    # the other one arrived once.
    assert bodies(rabbit, queue) == [b"a-%d" % i for i in range(50)] + [
        b"b-%d" % i for i in range(50)]
    assert markers(rabbit, queue)[0]["epoch"] == E + 1


def test_a_second_sink_on_the_same_marker_queue_is_refused(rabbit, queue, sinks, tmp_path):
    first = sinks()
    first.write(E, outputs(b"a", 1))
    first.prepare(E, 7)
    first.commit(E)
    second = sinks(state_dir=str(tmp_path), connect_retry=0.3)
    second.write(E + 1, outputs(b"b", 1))
    second.prepare(E + 1, 7)
    with pytest.raises(ExactlyOnceError, match="another connection holds"):
        second.commit(E + 1)
    first.close()  # the lock goes with the first sink's connection
    second.commit(E + 1)
    assert bodies(rabbit, queue) == [b"a-0", b"b-0"]


def test_a_missing_target_queue_fails_the_commit_and_keeps_the_epoch(rabbit, request, state):
    sink = RabbitMQTwoPhaseSink(SinkOptions(
        url=rabbit.url, routing_key=f"{request.node.name}-none", exactly_once=True,
        state_dir=state, connect_retry=0.2))
    try:
        sink.write(E, outputs(b"a", 1))
        sink.prepare(E, 7)
        with pytest.raises(ExactlyOnceError, match="NOT_FOUND"):
            sink.commit(E)
        assert sink.prepared_epochs() == [E]
    finally:
        sink.close()


# -- without a broker ----------------------------------------------------------


def test_in_doubt_without_a_broker_lists_every_prepared_epoch_at_once(state):
    sink = RabbitMQTwoPhaseSink(SinkOptions(
        url="amqp://guest:guest@127.0.0.1:1/%2F", routing_key="q", exactly_once=True,
        state_dir=state, connect_retry=5))
    try:
        sink.write(E, outputs(b"a", 1))
        sink.prepare(E, 3)
        t = time.monotonic()
        assert sink.in_doubt() == [(E, 3)]
        assert time.monotonic() - t < 2.5  # bounded: the engine waits for it
    finally:
        sink.close()


def test_epoch_store_round_trip_damage_and_lock(state):
    store = EpochStore(state)
    outs = [Output(b"k", b"p" * 1000, 12), Output(b"", b"", -1)]
    saved = store.save(9, 4, outs)
    again = store.save(9, 5, outs)  # a second preparation has a new id
    assert saved.id != again.id
    loaded = store.load(9)
    assert (loaded.epoch, loaded.incarnation, loaded.id, list(loaded.outputs)) == (
        9, 5, again.id, outs)
    assert [(p.epoch, p.incarnation) for p in store.list()] == [(9, 5)]
    assert store.load(10) is None and store.remove(10) is False
    with pytest.raises(StoreError, match="in use by another process"):
        EpochStore(state)
    path = os.path.join(state, "epoch-%020d" % 9)
    with open(path, "r+b") as f:
        f.seek(-3, os.SEEK_END)
        f.write(b"xyz")
    with pytest.raises(StoreError, match="damaged"):
        store.load(9)
    store.close()
    # An interrupted prepare leaves a temporary file, which was never
    # answered Prepared: it goes when the store opens.
    open(os.path.join(state, ".epoch-%020d.tmp" % 11), "wb").close()
    store = EpochStore(state)
    assert [p.epoch for p in store.list()] == [9]
    assert not any(n.endswith(".tmp") for n in os.listdir(state))
    store.close()


def test_flags(monkeypatch, tmp_path):
    monkeypatch.delenv("WALLAROO_INSTANCE", raising=False)
    o = parse_args(["--routing-key", "out", "--exactly-once", "--state-dir", str(tmp_path)])
    assert (o.exactly_once, o.state_dir, o.marker_queue, o.instance) == (
        True, str(tmp_path), "", 0)
    sink = make_sink(o)
    try:
        assert isinstance(sink, RabbitMQTwoPhaseSink)
        assert sink.marker_queue == "wallaroo.commits.out"
        assert sink.lock_queue == "wallaroo.commits.out.lock"
    finally:
        sink.close()
    # Each instance has its own marker queue and state directory.
    monkeypatch.setenv("WALLAROO_INSTANCE", "2")
    o = parse_args(["--exchange", "ex", "--exactly-once", "--state-dir", str(tmp_path),
                    "--marker-queue", "commits"])
    sink = make_sink(o)
    try:
        assert sink.marker_queue == "commits.2"
        assert sink._store.directory == os.path.join(str(tmp_path), "instance-2")
    finally:
        sink.close()
    o = parse_args(["--exchange", "ex", "--exactly-once", "--state-dir", str(tmp_path)])
    sink = make_sink(o)
    sink.close()
    assert sink.marker_queue == "wallaroo.commits.ex.2"


@pytest.mark.parametrize("argv", [
    ["--routing-key", "out", "--exactly-once"],
    ["--routing-key", "out", "--state-dir", "/tmp/x"],
])
def test_bad_exactly_once_flags_are_refused(argv, monkeypatch):
    monkeypatch.delenv("RABBITMQ_STATE_DIR", raising=False)
    with pytest.raises(SystemExit):
        parse_args(argv)


# -- the process, against the fake engine ------------------------------------------


@pytest.fixture
def engine():
    d = tempfile.mkdtemp(prefix="wl-rmq-")
    eng = FakeEngine(d, pb.ROLE_SINK)
    yield eng
    eng.close()
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def procs():
    started = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def start_sink(engine, procs, rabbit, queue, state, code=SINK):
    proc = spawn(code, engine, args=["--routing-key", queue, "--exactly-once",
                                     "--state-dir", state, "--url", rabbit.url])
    procs.append(proc)
    hello = engine.accept(max_inflight_batches=4)
    assert "2pc" in hello.capabilities
    return proc


def no_traceback(lines):
    assert not any("Traceback" in line for line in lines), "\n".join(lines)


def test_process_holds_prepares_and_commits_each_epoch_once(rabbit, queue, state, engine, procs):
    proc = start_sink(engine, procs, rabbit, queue, state)
    doubt = engine.expect("in_doubt", TIMEOUT)
    assert list(doubt.epochs) == []
    engine.sink_batch(E, [b"x%d" % i for i in range(100)])
    engine.sink_batch(E, [b"y"])
    engine.expect("reply", TIMEOUT)
    engine.expect("reply", TIMEOUT)
    engine.send(prepare=pb.Prepare(epoch=E, incarnation=7))
    assert engine.expect("prepared", TIMEOUT).ok
    assert broker.ready_count(rabbit.url, queue) == 0  # not visible before the commit
    engine.send(commit=pb.Commit(epoch=E, incarnation=7))
    resolved = engine.expect("resolved", TIMEOUT)
    assert (resolved.epoch, resolved.committed) == (E, True)
    assert bodies(rabbit, queue) == [b"x%d" % i for i in range(100)] + [b"y"]
    engine.send(goodbye=pb.Goodbye(reason="engine shutting down"))
    status, lines = finish(proc, TIMEOUT)
    assert status == 0
    no_traceback(lines)
    assert os.listdir(os.path.join(state, "instance-0")) == [".lock"]
    broker.delete(rabbit.url, "wallaroo.commits." + queue)


def test_process_killed_between_tx_commit_and_file_removal_does_not_publish_twice(
    rabbit, queue, state, engine, procs
):
    # This sink dies (exit 9) where it would remove the committed epoch's file.
    dies = (
        f"import os, sys\nsys.path.insert(0, {SINK_DIR!r})\n"
        "import epoch_store\n"
        "epoch_store.EpochStore.remove = lambda self, epoch: os._exit(9)\n"
        "import rabbitmq_sink\nsys.exit(rabbitmq_sink.main(sys.argv[1:]))\n"
    )
    first = start_sink(engine, procs, rabbit, queue, state, code=dies)
    engine.expect("in_doubt", TIMEOUT)
    engine.sink_batch(E, [b"a", b"b"])
    engine.expect("reply", TIMEOUT)
    engine.send(prepare=pb.Prepare(epoch=E, incarnation=7))
    assert engine.expect("prepared", TIMEOUT).ok
    engine.send(commit=pb.Commit(epoch=E, incarnation=7))
    status, _ = finish(first, TIMEOUT)
    assert status == 9  # no Resolved: the engine's commit is in doubt
    engine.wait_disconnected()
    second = start_sink(engine, procs, rabbit, queue, state)
    # Not listed: the marker says the broker committed it. (The engine
    # takes an epoch it sent Commit for and the sink does not list as
    # committed.)
    assert list(engine.expect("in_doubt", TIMEOUT).epochs) == []
    wait_line(second, "RMQ-RECOVERED epoch %d" % E, TIMEOUT)
    assert bodies(rabbit, queue) == [b"a", b"b"]
    engine.send(goodbye=pb.Goodbye(reason="engine shutting down"))
    status, lines = finish(second, TIMEOUT)
    assert status == 0
    no_traceback(lines)
    broker.delete(rabbit.url, "wallaroo.commits." + queue)


def test_process_killed_after_prepare_lists_the_epoch_and_the_engine_aborts_it(
    rabbit, queue, state, engine, procs
):
    first = start_sink(engine, procs, rabbit, queue, state)
    engine.expect("in_doubt", TIMEOUT)
    engine.sink_batch(E, [b"a"])
    engine.expect("reply", TIMEOUT)
    engine.send(prepare=pb.Prepare(epoch=E, incarnation=7))
    assert engine.expect("prepared", TIMEOUT).ok
    first.send_signal(signal.SIGKILL)
    first.wait()
    engine.wait_disconnected()
    second = start_sink(engine, procs, rabbit, queue, state)
    doubt = engine.expect("in_doubt", TIMEOUT)
    assert (list(doubt.epochs), list(doubt.incarnations)) == ([E], [7])
    engine.send(abort=pb.Abort(epoch=E, incarnation=7))
    resolved = engine.expect("resolved", TIMEOUT)
    assert (resolved.epoch, resolved.committed) == (E, False)
    assert broker.ready_count(rabbit.url, queue) == 0
    engine.send(goodbye=pb.Goodbye(reason="engine shutting down"))
    status, lines = finish(second, TIMEOUT)
    assert status == 0
    no_traceback(lines)
    assert os.listdir(os.path.join(state, "instance-0")) == [".lock"]
    try:
        broker.delete(rabbit.url, "wallaroo.commits." + queue)
    except Exception:
        pass
