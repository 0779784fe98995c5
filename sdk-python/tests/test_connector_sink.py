"""run_sink (plain and two-phase) against the strict fake engine, in a
thread of the test process. The fake engine checks the reply order and
that only the Prepare, Commit and Abort it sent are answered."""

import shutil
import tempfile

import pytest

from connector_engine import TOKEN, FakeEngine, Running
from wallaroo._pb import wallaroo_pb2 as pb
from wallaroo.connector import ConnectorConfig, Output, Sink, TwoPhaseSink, run_sink


class ListSink(Sink):
    """Records every write; ``fail`` maps a payload to the number of times
    a batch holding it is refused."""

    def __init__(self, fail=None):
        self.writes = []
        self.fail = dict(fail or {})
        self.closed = False

    def write(self, epoch, outputs):
        for o in outputs:
            if self.fail.get(o.payload, 0) > 0:
                self.fail[o.payload] -= 1
                raise OSError(f"cannot deliver {o.payload!r}")
        self.writes.append((epoch, list(outputs)))

    def close(self):
        self.closed = True


class Ledger(TwoPhaseSink):
    """A two-phase sink that records every call in order."""

    def __init__(self, doubts=(), refuse_prepare=()):
        self.doubts = list(doubts)
        self.refuse_prepare = set(refuse_prepare)
        self.calls = []

    def write(self, epoch, outputs):
        self.calls.append(("write", epoch, [o.payload for o in outputs]))

    def prepare(self, epoch, incarnation):
        if epoch in self.refuse_prepare:
            raise OSError("disk full")
        self.calls.append(("prepare", epoch, incarnation))

    def commit(self, epoch):
        self.calls.append(("commit", epoch))

    def abort(self, epoch):
        self.calls.append(("abort", epoch))

    def in_doubt(self):
        self.calls.append(("in_doubt",))
        return self.doubts


@pytest.fixture
def engine():
    directory = tempfile.mkdtemp(prefix="wl-")
    eng = FakeEngine(directory, pb.ROLE_SINK)
    yield eng
    eng.close()
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def start(engine):
    runs = []

    def go(sink):
        config = ConnectorConfig(
            address=engine.addr,
            token=TOKEN,
            program="snk",
            reconnect_backoff_min=0.01,
            reconnect_backoff_max=0.05,
        )
        run = Running(run_sink, sink, config)
        runs.append(run)
        return run

    yield go
    for run in runs:
        run.stop.set()
    engine.close()
    for run in runs:
        run.finish()


def test_batches_are_written_and_answered_in_order(engine, start):
    sink = ListSink()
    start(sink)
    hello = engine.accept(max_inflight_batches=4)
    assert hello.role == pb.ROLE_SINK and "2pc" not in hello.capabilities
    ids = [engine.sink_batch(0, [b"a", b"b"], key=b"k"), engine.sink_batch(0, [b"c"]),
           engine.sink_batch(1, [b"d"])]
    # The fake engine fails the test if a reply is not for the oldest batch.
    assert [engine.expect("reply").batch_id for _ in ids] == ids
    assert sink.writes == [
        (0, [Output(b"k", b"a", 123), Output(b"k", b"b", 123)]),
        (0, [Output(b"", b"c", 123)]),
        (1, [Output(b"", b"d", 123)]),
    ]


def test_a_failed_write_sends_error_and_the_batch_is_delivered_on_the_next_connection(engine, start):
    sink = ListSink(fail={b"bad": 1})
    start(sink)
    engine.accept()
    first = engine.sink_batch(0, [b"ok"])
    second = engine.sink_batch(0, [b"bad"])
    assert engine.expect("reply").batch_id == first
    error = engine.expect("error")
    assert (error.code, error.batch_id) == (pb.ERROR_CODE_INTERNAL, second)
    assert "ListSink.write() failed on batch 2" in error.message
    assert "OSError: cannot deliver b'bad'" in error.message
    engine.drop()  # as the engine does after a sink's Error
    engine.accept()
    again = engine.sink_batch(0, [b"bad"])  # the engine sends it again
    assert engine.expect("reply").batch_id == again
    assert [w[1][0].payload for w in sink.writes] == [b"ok", b"bad"]


def test_frames_a_sink_does_not_take_get_bad_frame(engine, start):
    start(ListSink())
    engine.accept()
    engine.send(credit=pb.Credit(events=5))
    assert engine.expect("error").message == "credit not allowed while open"
    engine.send(prepare=pb.Prepare(epoch=1, incarnation=7))  # not a 2pc sink
    assert engine.expect("error").message == "prepare not allowed while open"
    engine.send(welcome=pb.Welcome(version_major=1))
    assert engine.expect("error").code == pb.ERROR_CODE_BAD_FRAME
    engine.sink_batch(0, [b"x"])
    engine.expect("reply")


def test_stop_closes_the_sink_and_says_goodbye(engine, start):
    sink = ListSink()
    run = start(sink)
    engine.accept()
    engine.sink_batch(0, [b"x"])
    engine.expect("reply")
    run.stop.set()
    assert engine.expect("goodbye").reason == "stopped"
    assert run.status() == 0
    assert sink.closed


def test_two_phase_sink_lists_in_doubt_epochs_first_and_follows_the_engine(engine, start):
    sink = Ledger(doubts=[(3, 5)])
    start(sink)
    hello = engine.accept()
    assert "2pc" in hello.capabilities
    doubt = engine.expect("in_doubt")  # the fake engine checks that it comes first
    assert (list(doubt.epochs), list(doubt.incarnations)) == ([3], [5])
    engine.send(abort=pb.Abort(epoch=3, incarnation=7))
    resolved = engine.expect("resolved")
    assert (resolved.epoch, resolved.committed) == (3, False)

    engine.sink_batch(4, [b"x", b"y"])
    engine.expect("reply")
    engine.send(prepare=pb.Prepare(epoch=4, checkpoint_id=0, incarnation=7))
    prepared = engine.expect("prepared")
    assert (prepared.epoch, prepared.ok, prepared.error) == (4, True, "")
    engine.send(commit=pb.Commit(epoch=4, incarnation=7))
    resolved = engine.expect("resolved")
    assert (resolved.epoch, resolved.committed) == (4, True)
    assert sink.calls == [
        ("in_doubt",),
        ("abort", 3),
        ("write", 4, [b"x", b"y"]),
        ("prepare", 4, 7),
        ("commit", 4),
    ]


def test_commit_or_abort_from_an_older_incarnation_is_ignored(engine, start):
    sink = Ledger()
    start(sink)
    engine.accept(incarnation=9)
    engine.incarnation = 9
    engine.expect("in_doubt")
    engine.send(commit=pb.Commit(epoch=1, incarnation=8))
    engine.send(abort=pb.Abort(epoch=2, incarnation=8))
    assert engine.barrier() == []  # not answered (the fake engine would fail it)
    assert sink.calls == [("in_doubt",)]
    engine.send(commit=pb.Commit(epoch=1, incarnation=9))
    assert engine.expect("resolved").committed


def test_a_prepare_that_fails_is_answered_not_ok(engine, start):
    sink = Ledger(refuse_prepare={5})
    start(sink)
    engine.accept()
    engine.expect("in_doubt")
    engine.send(prepare=pb.Prepare(epoch=5, incarnation=7))
    prepared = engine.expect("prepared")
    assert (prepared.epoch, prepared.ok) == (5, False)
    assert "Ledger.prepare(5) failed: OSError: disk full" in prepared.error


def test_in_doubt_is_sent_again_after_every_connect(engine, start):
    sink = Ledger(doubts=[(2, 7)])
    start(sink)
    engine.accept()
    assert list(engine.expect("in_doubt").epochs) == [2]
    engine.drop()
    engine.accept()
    assert list(engine.expect("in_doubt").epochs) == [2]
    assert sink.calls == [("in_doubt",), ("in_doubt",)]


def test_run_sink_takes_a_sink():
    with pytest.raises(TypeError, match="takes a wallaroo.connector.Sink"):
        run_sink(object(), ConnectorConfig(address="ipc:///nowhere", token="t"))
    with pytest.raises(TypeError):
        TwoPhaseSink()  # every method is abstract
