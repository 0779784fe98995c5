"""file_sink.py as a child process against the strict fake engine of the
SDK's tests, and FileSink's failure handling in-process."""

import os
import shutil
import struct
import tempfile

import pytest

import file_sink
from connector_engine import FakeEngine, finish, spawn
from wallaroo._pb import wallaroo_pb2 as pb
from wallaroo.connector import Output

PROGRAM = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "file_sink.py")


@pytest.fixture
def directory():
    d = tempfile.mkdtemp(prefix="wl-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def engine(directory):
    eng = FakeEngine(directory, pb.ROLE_SINK)
    yield eng
    eng.close()


@pytest.fixture
def procs():
    started = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def read(path):
    with open(path, "rb") as f:
        return f.read()


def test_each_batch_is_on_disk_when_it_is_answered(directory, engine, procs):
    path = os.path.join(directory, "out.txt")
    procs.append(spawn(PROGRAM, engine, args=[path]))
    engine.accept(max_inflight_batches=4)
    engine.sink_batch(0, [b"one", b"two"])
    engine.expect("reply")
    assert read(path) == b"one\ntwo\n"
    engine.sink_batch(0, [b""])
    engine.sink_batch(0, [b"three"])
    engine.expect("reply")
    engine.expect("reply")  # the fake engine checks the order
    assert read(path) == b"one\ntwo\n\nthree\n"
    engine.send(goodbye=pb.Goodbye(reason="engine shutting down"))
    assert finish(procs[0])[0] == 0


def test_length_framing_appends_to_an_existing_file(directory, engine, procs):
    path = os.path.join(directory, "out.bin")
    with open(path, "wb") as f:
        f.write(b"old")
    procs.append(spawn(PROGRAM, engine, args=["--framing", "length", path]))
    engine.accept()
    engine.sink_batch(0, [b"a\nb", b""])
    engine.expect("reply")
    assert read(path) == b"old" + struct.pack(">I", 3) + b"a\nb" + struct.pack(">I", 0)
    engine.send(goodbye=pb.Goodbye())
    assert finish(procs[0])[0] == 0


def test_a_file_that_cannot_be_opened_exits_2(directory, engine, procs):
    path = os.path.join(directory, "no-such-dir", "out.txt")
    procs.append(spawn(PROGRAM, engine, args=[path]))
    status, lines = finish(procs[0])
    assert status == 2
    assert lines == [f"file_sink: cannot open {path}: No such file or directory"]


def test_a_failed_write_leaves_the_file_as_it_was(directory, monkeypatch):
    path = os.path.join(directory, "out.txt")
    sink = file_sink.FileSink(path)
    sink.write(0, [Output(b"", b"kept")])

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(file_sink.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="No space left"):
        sink.write(0, [Output(b"", b"lost")])
    monkeypatch.undo()
    sink.write(0, [Output(b"", b"again")])
    sink.close()
    assert read(path) == b"kept\nagain\n"


# -- --exactly-once (FileSink2PC), in-process ------------------------------

def outs(*payloads):
    return [Output(b"", p, 0) for p in payloads]


def test_two_phase_file_holds_committed_epochs_only(directory):
    path = os.path.join(directory, "out.txt")
    s = file_sink.FileSink2PC(path)
    s.write(5, outs(b"a", b"b"))
    s.write(6, outs(b"c"))
    s.write(5, outs(b"d"))
    assert read(path) == b""
    s.prepare(5, 77)
    assert s.in_doubt() == [(5, 77)]
    assert read(path) == b""
    s.commit(5)
    assert read(path) == b"a\nb\nd\n"
    s.prepare(6, 77)
    s.abort(6)
    assert s.in_doubt() == []
    assert read(path) == b"a\nb\nd\n"
    s.commit(5)  # again (a lost Resolved): nothing twice
    assert read(path) == b"a\nb\nd\n"
    s.close()
    assert os.listdir(path + ".2pc") == []


def test_two_phase_file_survives_a_restart_at_every_step(directory):
    path = os.path.join(directory, "out.txt")
    s = file_sink.FileSink2PC(path)
    s.write(1, outs(b"one"))
    s.prepare(1, 9)
    s.write(2, outs(b"two"))  # not prepared: gone after the restart
    s.close()
    s = file_sink.FileSink2PC(path)
    assert s.in_doubt() == [(1, 9)]
    assert not [n for n in os.listdir(path + ".2pc") if n.endswith(".pending")]
    s.commit(1)
    assert read(path) == b"one\n"
    s.close()


def test_two_phase_commit_cut_short_by_a_crash_appends_once(directory):
    path = os.path.join(directory, "out.txt")
    s = file_sink.FileSink2PC(path)
    s.write(1, outs(b"first"))
    s.prepare(1, 3)
    s.commit(1)
    s.write(2, outs(b"second", b"third"))
    s.prepare(2, 3)
    # A commit that wrote its marker and half of the epoch, then died.
    with open(os.path.join(path + ".2pc", "2.commit"), "wb") as fh:
        fh.write(b"%d" % os.path.getsize(path))
    with open(path, "ab") as fh:
        fh.write(b"seco")
    s.close()
    s = file_sink.FileSink2PC(path)
    assert read(path) == b"first\n", "the partial append is undone at start"
    assert s.in_doubt() == [(2, 3)]
    s.commit(2)
    assert read(path) == b"first\nsecond\nthird\n"
    s.close()
