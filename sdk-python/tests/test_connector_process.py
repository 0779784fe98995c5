"""Connectors as real child processes with the environment the engine gives
a spawned connector: exit statuses, refusal, SIGTERM, the lost engine."""

import shutil
import signal
import tempfile

import pytest

from connector_engine import FakeEngine, finish, spawn, wait_line
from wallaroo._pb import wallaroo_pb2 as pb

SOURCE = r"""
import sys
from wallaroo.connector import Message, Source, StreamSpec, run_source


class Counter(Source):
    def __init__(self):
        self.next = 1

    def streams(self):
        return [StreamSpec("count")]

    def open(self, stream, resume_after):
        self.next = resume_after + 1

    def poll(self, max_events, timeout):
        out = [Message("count", self.next + i, b"%d" % (self.next + i)) for i in range(max_events)]
        self.next += max_events
        return out

    def acked(self, stream, up_to):
        print("acked", stream, up_to, file=sys.stderr, flush=True)

    def close(self):
        print("closed", file=sys.stderr, flush=True)


sys.exit(run_source(Counter()))
"""

SINK = r"""
import sys
from wallaroo.connector import Sink, run_sink


class Null(Sink):
    def write(self, epoch, outputs):
        pass

    def close(self):
        print("closed", file=sys.stderr, flush=True)


sys.exit(run_sink(Null()))
"""


@pytest.fixture
def directory():
    d = tempfile.mkdtemp(prefix="wl-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def source_engine(directory):
    eng = FakeEngine(directory, pb.ROLE_SOURCE)
    yield eng
    eng.close()


@pytest.fixture
def sink_engine(directory):
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


def test_a_spawned_source_with_a_wrong_token_is_refused_and_exits_3(source_engine, procs):
    procs.append(spawn(SOURCE, source_engine, env={"WALLAROO_TOKEN": "wrong"}))
    hello = source_engine.expect("hello")
    assert (hello.token, hello.program, hello.instance) == ("wrong", "conn", 0)
    assert hello.pid == procs[0].pid
    source_engine.send(
        refuse=pb.Refuse(code=pb.ERROR_CODE_BAD_TOKEN, message="token does not match")
    )
    status, lines = finish(procs[0])
    assert status == 3
    refused = [line for line in lines if "refused" in line]
    assert refused == [
        "wallaroo-sdk[conn/0]: the engine refused this source: ERROR_CODE_BAD_TOKEN: "
        "token does not match (the token comes from WALLAROO_TOKEN)"
    ]
    assert "closed" in lines


def test_sigterm_stops_polling_waits_for_acks_closes_and_says_goodbye(source_engine, procs):
    proc = spawn(SOURCE, source_engine)
    procs.append(proc)
    source_engine.accept(initial_credits=5)
    source_engine.open_streams(1)
    assert [i for _, i, _ in source_engine.events(5)] == [1, 2, 3, 4, 5]
    proc.send_signal(signal.SIGTERM)
    wait_line(proc, "stop requested (SIGTERM, Ctrl-C or the stop event)")
    # It polls no more, even with credits, and waits for its 5 messages.
    source_engine.send(credit=pb.Credit(events=100))
    assert source_engine.barrier() == []
    source_engine.send(ack=pb.Ack(stream_id=1, up_to=5, incarnation=7))
    assert source_engine.expect("goodbye").reason == "stopped"
    status, lines = finish(proc)
    assert status == 0
    assert lines[-3:] == [
        "acked count 5",
        "closed",
        "wallaroo-sdk[conn/0]: said goodbye (stopped)",
    ]


def test_a_spawned_connector_exits_1_when_the_engine_goes_away(sink_engine, procs):
    proc = spawn(SINK, sink_engine)
    procs.append(proc)
    sink_engine.accept()
    sink_engine.sink_batch(0, [b"x"])
    sink_engine.expect("reply")
    sink_engine.drop()
    status, lines = finish(proc)
    assert status == 1
    assert lines[-2:] == [
        "wallaroo-sdk[conn/0]: the engine closed the connection; exiting so that "
        "the engine starts this sink again",
        "closed",
    ]


def test_a_spawned_connector_that_cannot_connect_exits_1(directory, procs):
    code = SINK.replace("run_sink(Null())", "run_sink(Null(), connect_timeout=0.2)")
    proc = spawn(code, env={
        "WALLAROO_ENGINE_ADDR": f"ipc://{directory}/nobody.sock",
        "WALLAROO_TOKEN": "t", "WALLAROO_PROGRAM": "p", "WALLAROO_INSTANCE": "1",
    })
    procs.append(proc)
    status, lines = finish(proc)
    assert status == 1
    assert "could not connect to the engine at ipc://" in lines[-2]


def test_a_missing_environment_is_named_and_exits_2(sink_engine, procs):
    proc = spawn(SINK, sink_engine, env={"WALLAROO_ENGINE_ADDR": None, "WALLAROO_TOKEN": None})
    procs.append(proc)
    status, lines = finish(proc)
    assert status == 2
    assert len(lines) == 1
    assert "missing environment variables WALLAROO_ENGINE_ADDR, WALLAROO_TOKEN" in lines[0]
    assert "ConnectorConfig" in lines[0]


def test_a_role_mismatch_exits_2(sink_engine, procs):
    proc = spawn(SINK, sink_engine, env={"WALLAROO_ROLE": "source"})
    procs.append(proc)
    status, lines = finish(proc)
    assert status == 2
    assert "WALLAROO_ROLE='source', but this program is a sink" in lines[0]


def test_an_unsupported_protocol_version_exits_2(sink_engine, procs):
    proc = spawn(SINK, sink_engine)
    procs.append(proc)
    sink_engine.expect("hello")
    sink_engine.send(welcome=pb.Welcome(version_major=2))
    sink_engine.state = "open"  # what follows is not a sink session
    error = sink_engine.expect("error")
    assert error.code == pb.ERROR_CODE_BAD_VERSION
    sink_engine.drop()
    status, lines = finish(proc)
    assert status == 2
    assert any("protocol version 2.0 is not supported" in line for line in lines)


def test_ctrl_c_stops_an_accepted_connector_cleanly(sink_engine, procs):
    code = SINK.replace(
        "run_sink(Null())",
        f"run_sink(Null(), ConnectorConfig(address={sink_engine.addr!r}, token='c0ffee'))",
    ).replace("import Sink, run_sink", "import ConnectorConfig, Sink, run_sink")
    proc = spawn(code)
    procs.append(proc)
    sink_engine.accept()
    sink_engine.sink_batch(0, [b"x"])
    sink_engine.expect("reply")
    proc.send_signal(signal.SIGINT)
    assert sink_engine.expect("goodbye").reason == "stopped"
    status, lines = finish(proc)
    assert status == 0
    assert "closed" in lines
