"""The connectors as real child processes (the environment the engine gives
a spawned connector), against the SDK's fake engine
(sdk-python/tests/connector_engine.py) and the real broker."""

import os
import shutil
import signal
import tempfile

import pytest

import broker

connector_engine = pytest.importorskip("connector_engine")
from connector_engine import FakeEngine, finish, spawn, wait_line  # noqa: E402
from wallaroo._pb import wallaroo_pb2 as pb  # noqa: E402

ROOT = broker.ROOT
SOURCE = os.path.join(ROOT, "connectors", "rabbitmq_source", "rabbitmq_source.py")
SINK = os.path.join(ROOT, "connectors", "rabbitmq_sink", "rabbitmq_sink.py")
TIMEOUT = 10.0


@pytest.fixture(autouse=True)
def bounded():
    """Fails a test that hangs: FakeEngine.recv's timeout restarts with every
    heartbeat the connector asks for, so a missing frame would otherwise
    wait for ever."""
    def expired(signum, frame):
        raise TimeoutError("test took over 60 s")

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


@pytest.fixture
def directory():
    d = tempfile.mkdtemp(prefix="wl-rmq-")
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


def no_traceback(lines):
    assert not any("Traceback" in line for line in lines), "\n".join(lines)


def test_source_process_sends_the_queue_and_acks_the_broker_only_up_to_the_engines_ack(
    rabbit, queue, source_engine, procs
):
    broker.publish(rabbit.url, queue, 30)
    proc = spawn(SOURCE, source_engine, args=["--queue", queue], env={"RABBITMQ_URL": rabbit.url})
    procs.append(proc)
    source_engine.accept(initial_credits=100)
    source_engine.open_streams(1)
    got = source_engine.events(30)
    # The SDK passed the Welcome to the source: prefetch = initial credits.
    wait_line(proc, "(prefetch 100 per queue)", TIMEOUT)
    assert [(name, i, p) for name, i, p in got] == [(queue, i, b"m%d" % i) for i in range(1, 31)]
    source_engine.send(ack=pb.Ack(stream_id=1, up_to=20, incarnation=7))
    source_engine.send(credit=pb.Credit(events=20))
    assert source_engine.barrier() == []  # the ack was handled, nothing more to send
    source_engine.send(goodbye=pb.Goodbye(reason="engine shutting down"))
    status, lines = finish(proc, TIMEOUT)
    assert status == 0
    no_traceback(lines)
    # 21..30 were never acknowledged by the engine: still in the queue.
    assert [int(m.message_id) for m in broker.drain(rabbit.url, queue)] == list(range(21, 31))


def test_a_restarted_source_holds_what_the_engine_has_until_its_ack(
    rabbit, queue, source_engine, procs
):
    broker.publish(rabbit.url, queue, 10)
    args = ["--queue", queue, "--url", rabbit.url]
    first = spawn(SOURCE, source_engine, args=args)
    procs.append(first)
    source_engine.accept(initial_credits=100)
    source_engine.open_streams(1)
    assert [i for _, i, _ in source_engine.events(10)] == list(range(1, 11))
    # The source crashes before any Ack: the broker requeues 1..10.
    first.kill()
    first.wait()
    source_engine.wait_disconnected()
    second = spawn(SOURCE, source_engine, args=args)
    procs.append(second)
    source_engine.accept(initial_credits=100)
    source_engine.open_streams(1)  # resume after 10: the engine has them
    wait_line(second, "RMQ-CONNECT", TIMEOUT)
    assert source_engine.barrier() == []  # 1..10 held, not sent again
    # The engine tells the new connection what is done (as it does on every
    # OpenStream): the held messages are acknowledged to the broker.
    source_engine.send(ack=pb.Ack(stream_id=1, up_to=10, incarnation=7))
    broker.publish(rabbit.url, queue, [11, 12])
    assert [i for _, i, _ in source_engine.events(2)] == [11, 12]
    source_engine.send(ack=pb.Ack(stream_id=1, up_to=12, incarnation=7))
    source_engine.send(goodbye=pb.Goodbye(reason="engine shutting down"))
    status, lines = finish(second, TIMEOUT)
    assert status == 0
    no_traceback(lines)
    assert broker.ready_count(rabbit.url, queue) == 0


def test_source_process_rejects_a_message_without_id_and_goes_on(
    rabbit, queue, source_engine, procs
):
    import pika

    broker.publish_raw(rabbit.url, queue, [
        (b"a", pika.BasicProperties(message_id="1")),
        (b"no id", pika.BasicProperties()),
        (b"b", pika.BasicProperties(message_id="2")),
    ])
    proc = spawn(SOURCE, source_engine, args=["--queue", queue, "--url", rabbit.url])
    procs.append(proc)
    source_engine.accept(initial_credits=10)
    source_engine.open_streams(1)
    assert source_engine.events(2) == [(queue, 1, b"a"), (queue, 2, b"b")]
    wait_line(proc, "RMQ-BAD-ID", TIMEOUT)
    proc.send_signal(signal.SIGTERM)
    source_engine.send(ack=pb.Ack(stream_id=1, up_to=2, incarnation=7))
    assert source_engine.expect("goodbye").reason == "stopped"
    status, lines = finish(proc, TIMEOUT)
    assert status == 0
    no_traceback(lines)
    assert broker.ready_count(rabbit.url, queue) == 0


def test_sink_process_answers_each_batch_once_published_and_confirmed(
    rabbit, queue, sink_engine, procs
):
    proc = spawn(SINK, sink_engine, args=["--routing-key", queue, "--key-header", "k"],
                 env={"RABBITMQ_URL": rabbit.url})
    procs.append(proc)
    sink_engine.accept(max_inflight_batches=4)
    b1 = sink_engine.sink_batch(0, [b"x%d" % i for i in range(100)], key=b"key")
    b2 = sink_engine.sink_batch(0, [b"y"])
    assert sink_engine.expect("reply", TIMEOUT).batch_id == b1
    assert sink_engine.expect("reply", TIMEOUT).batch_id == b2
    got = broker.drain(rabbit.url, queue)
    assert [m.body for m in got] == [b"x%d" % i for i in range(100)] + [b"y"]
    assert all(m.properties.delivery_mode == 2 for m in got)
    assert got[0].properties.headers == {"k": b"key"}
    sink_engine.send(goodbye=pb.Goodbye(reason="engine shutting down"))
    status, lines = finish(proc, TIMEOUT)
    assert status == 0
    no_traceback(lines)


def test_sink_process_answers_an_undeliverable_batch_with_an_error(
    rabbit, request, sink_engine, procs
):
    proc = spawn(SINK, sink_engine, args=["--routing-key", f"{request.node.name}-none"],
                 env={"RABBITMQ_URL": rabbit.url})
    procs.append(proc)
    sink_engine.accept(max_inflight_batches=4)
    b1 = sink_engine.sink_batch(0, [b"lost?"])
    error = sink_engine.expect("error", TIMEOUT)
    assert error.batch_id == b1
    assert "could not be routed" in error.message
    # The SDK gives the connection up; a spawned sink exits for a restart.
    status, lines = finish(proc, TIMEOUT)
    assert status == 1
    no_traceback(lines)
