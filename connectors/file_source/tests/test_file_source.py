"""file_source.py as a child process against the strict fake engine of the
SDK's tests (which checks credits, ids and the stream life cycle)."""

import os
import shutil
import struct
import tempfile

import pytest

from connector_engine import FakeEngine, finish, spawn
from wallaroo._pb import wallaroo_pb2 as pb

PROGRAM = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "file_source.py")


@pytest.fixture
def directory():
    d = tempfile.mkdtemp(prefix="wl-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def engine(directory):
    eng = FakeEngine(directory, pb.ROLE_SOURCE)
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


def write(directory, name, data):
    path = os.path.join(directory, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def run_to_goodbye(engine):
    """Take batches and EndStreams (answering each with StreamEnded) until
    Goodbye; returns the events (name, id, payload) and {name: last_id}."""
    events, ends = [], {}
    while True:
        frame = engine.recv()
        body = frame.WhichOneof("body")
        if body == "batch":
            events.extend(
                (engine.streams[e.stream_id], e.message_id, e.payload) for e in frame.batch.events
            )
        elif body == "end_stream":
            end = frame.end_stream
            ends[engine.streams[end.stream_id]] = end.last_id
            engine.send(stream_ended=pb.StreamEnded(stream_id=end.stream_id, up_to=end.last_id))
        else:
            assert body == "goodbye", frame
            assert frame.goodbye.reason == "every stream ended"
            return events, ends


def test_one_event_per_line_ids_from_1_then_end_and_exit_0(directory, engine, procs):
    path = write(directory, "in.txt", b"alpha\nbeta\r\n\nlast without newline")
    procs.append(spawn(PROGRAM, engine, args=[path]))
    engine.accept(initial_credits=100)
    opened = engine.open_streams(1)
    assert list(opened) == [path]  # the stream is named after the path as given
    assert run_to_goodbye(engine) == (
        [
            (path, 1, b"alpha"),
            (path, 2, b"beta"),
            (path, 3, b""),
            (path, 4, b"last without newline"),
        ],
        {path: 4},
    )
    status, _ = finish(procs[0])
    assert status == 0


def test_lines_up_to_resume_after_are_skipped(directory, engine, procs):
    path = write(directory, "in.txt", b"".join(b"line %d\n" % i for i in range(1, 8)))
    procs.append(spawn(PROGRAM, engine, args=[path]))
    engine.accept(initial_credits=100)
    engine.open_streams(1, resume={path: 5})  # the engine has lines 1..5
    events, _ = run_to_goodbye(engine)
    assert events == [(path, 6, b"line 6"), (path, 7, b"line 7")]
    assert finish(procs[0])[0] == 0


def test_length_framing_and_named_streams_one_per_file(directory, engine, procs):
    frames = lambda *ps: b"".join(struct.pack(">I", len(p)) + p for p in ps)  # noqa: E731
    a = write(directory, "a.bin", frames(b"a1", b"", b"a\n3"))
    b = write(directory, "b.bin", frames(b"b1"))
    procs.append(spawn(PROGRAM, engine, args=["--framing", "length", "--name", "first",
                                              "--name", "second", a, b]))
    engine.accept(initial_credits=100)
    assert sorted(engine.open_streams(2)) == ["first", "second"]
    events, ends = run_to_goodbye(engine)
    assert events == [("first", 1, b"a1"), ("first", 2, b""), ("first", 3, b"a\n3"),
                      ("second", 1, b"b1")]
    assert ends == {"first": 3, "second": 1}
    assert finish(procs[0])[0] == 0


def test_a_file_ending_inside_a_frame_ends_the_stream_after_its_last_whole_frame(
    directory, engine, procs
):
    path = write(directory, "t.bin", struct.pack(">I", 1) + b"x" + struct.pack(">I", 10) + b"abc")
    procs.append(spawn(PROGRAM, engine, args=["--framing", "length", path]))
    engine.accept(initial_credits=100)
    engine.open_streams(1)
    assert run_to_goodbye(engine) == ([(path, 1, b"x")], {path: 1})
    status, lines = finish(procs[0])
    assert status == 0
    assert f"file_source: {path}: the file ends inside a frame (7 bytes ignored)" in lines


def test_reads_only_as_many_lines_as_the_engine_grants(directory, engine, procs):
    path = write(directory, "in.txt", b"".join(b"%d\n" % i for i in range(1, 11)))
    procs.append(spawn(PROGRAM, engine, args=[path]))
    engine.accept(initial_credits=4)
    engine.open_streams(1)
    assert [i for _, i, _ in engine.events(4)] == [1, 2, 3, 4]  # credits are checked
    assert engine.barrier() == []
    engine.send(credit=pb.Credit(events=100))
    events, _ = run_to_goodbye(engine)
    assert [i for _, i, _ in events] == [5, 6, 7, 8, 9, 10]
    assert finish(procs[0])[0] == 0


def test_dials_an_accepting_engine_and_finds_the_sdk_without_pythonpath(
    directory, engine, procs
):
    path = write(directory, "in.txt", b"one\n")
    procs.append(spawn(PROGRAM, None, env={"PYTHONPATH": "", "MY_TOKEN": engine.token},
                       args=["--connect", engine.addr, "--token-env", "MY_TOKEN", path]))
    hello = engine.accept(initial_credits=10)
    assert hello.program == "file_source"
    engine.open_streams(1)
    assert run_to_goodbye(engine) == ([(path, 1, b"one")], {path: 1})
    assert finish(procs[0])[0] == 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["/no/such/file"], "/no/such/file: not a readable file"),
        (["--name", "x", "a", "b"], "1 --name for 2 files"),
        (["--connect", "ipc:///x", "a"], "--connect and --token-env go together"),
    ],
)
def test_bad_arguments_exit_2(engine, procs, args, message):
    procs.append(spawn(PROGRAM, engine, args=args))
    status, lines = finish(procs[0])
    assert status == 2
    assert message in lines[-1]
