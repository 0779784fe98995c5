"""The RabbitMQ sink against a real broker, driven as the SDK drives it
(write per batch, close), without an engine."""

import time

import pika
import pytest

import broker
from rabbitmq_sink import RabbitMQSink, SinkError, SinkOptions, parse_args
from wallaroo.connector import Output


def make_sink(rabbit, **kw):
    kw.setdefault("connect_retry", 0.5)
    return RabbitMQSink(SinkOptions(url=rabbit.url, **kw))


def outputs(n, start=1):
    return [Output(b"k%d" % i, b"out-%d" % i, 0) for i in range(start, start + n)]


def test_write_publishes_every_output_persistent_in_order(rabbit, queue):
    sink = make_sink(rabbit, routing_key=queue)
    sink.write(0, outputs(500))
    sink.write(0, outputs(3, start=501))
    sink.close()
    got = broker.drain(rabbit.url, queue)
    assert [m.body for m in got] == [b"out-%d" % i for i in range(1, 504)]
    assert all(m.properties.delivery_mode == 2 for m in got)
    # Outputs carry no id of their own in the SDK: no message_id.
    assert all(m.message_id is None for m in got)
    assert sink.stats["confirmed"] == 503 and sink.stats["batches"] == 2


def test_key_header_and_timestamp(rabbit, queue):
    sink = make_sink(rabbit, routing_key=queue, key_header="wallaroo-key")
    sink.write(0, [Output(b"user-1", b"a", 1_700_000_000_123_456), Output(b"", b"b", 0)])
    sink.close()
    a, b = broker.drain(rabbit.url, queue)
    assert a.properties.headers == {"wallaroo-key": b"user-1"}
    assert a.properties.timestamp == 1_700_000_000
    assert b.properties.headers is None and b.properties.timestamp is None


def test_empty_batch_needs_no_broker(rabbit):
    sink = RabbitMQSink(SinkOptions(url="amqp://guest:guest@127.0.0.1:1/%2F", routing_key="q"))
    sink.write(0, [])
    sink.close()


def test_exchange_and_declared_bound_queue(rabbit, request):
    ex = f"{request.node.name}-ex"
    q = f"{request.node.name}-q"
    with broker.connect(rabbit.url) as c:
        c.channel().exchange_declare(ex, "direct", durable=True)
    sink = make_sink(rabbit, exchange=ex, routing_key="rk", declare_queues=(q,))
    sink.write(0, outputs(4))
    sink.close()
    assert [m.body for m in broker.drain(rabbit.url, q)] == [b"out-%d" % i for i in range(1, 5)]
    with broker.connect(rabbit.url) as c:
        ch = c.channel()
        ch.queue_delete(q)
        ch.exchange_delete(ex)


def test_unroutable_output_makes_write_raise(rabbit, request):
    sink = make_sink(rabbit, routing_key=f"{request.node.name}-no-such-queue")
    with pytest.raises(SinkError, match="could not be routed"):
        sink.write(0, outputs(2))
    sink.close()


def test_nack_makes_write_raise(rabbit, request):
    q = f"{request.node.name}-full"
    broker.declare(rabbit.url, q, **{"x-max-length": 2, "x-overflow": "reject-publish"})
    sink = make_sink(rabbit, routing_key=q)
    with pytest.raises(SinkError, match=r"refused \(nack\) 3 of 5"):
        sink.write(0, outputs(5))
    # The channel survives a nack: the next batch goes through once there
    # is room.
    broker.drain(rabbit.url, q)
    sink.write(0, outputs(2, start=10))
    sink.close()
    assert [m.body for m in broker.drain(rabbit.url, q)] == [b"out-10", b"out-11"]
    broker.delete(rabbit.url, q)


def test_missing_exchange_makes_write_raise(rabbit, queue):
    sink = make_sink(rabbit, exchange="no-such-exchange", routing_key=queue)
    with pytest.raises(SinkError, match="NOT_FOUND|404"):
        sink.write(0, outputs(1))
    sink.close()


def test_unreachable_broker_makes_write_raise_after_the_retry_window(rabbit):
    sink = RabbitMQSink(SinkOptions(url="amqp://guest:guest@127.0.0.1:1/%2F",
                                    routing_key="q", connect_retry=0.3))
    t = time.monotonic()
    with pytest.raises(SinkError, match="cannot reach the broker"):
        sink.write(0, outputs(1))
    assert time.monotonic() - t < 3
    sink.close()


def test_connection_closed_between_batches_is_reopened(rabbit, queue):
    sink = make_sink(rabbit, routing_key=queue)
    sink.write(0, outputs(2))
    # The broker closes the connection (as on a restart): the next write
    # sees the close before publishing and reconnects.
    rabbit.rabbitmqctl("close_all_connections", "test")
    broker.wait_for(lambda: (sink._run_until(lambda: True, 0), sink._broken)[1] is not None,
                    what="the sink to see its connection closed")
    sink.write(0, outputs(2, start=3))
    sink.close()
    assert [m.body for m in broker.drain(rabbit.url, queue)] == [b"out-%d" % i for i in range(1, 5)]
    assert sink.stats["connects"] == 2


def test_flags_and_environment(monkeypatch):
    monkeypatch.setenv("RABBITMQ_EXCHANGE", "ex")
    monkeypatch.setenv("RABBITMQ_ROUTING_KEY", "rk")
    monkeypatch.setenv("RABBITMQ_DECLARE_QUEUES", "a,b")
    o = parse_args([])
    assert (o.exchange, o.routing_key, o.declare_queues) == ("ex", "rk", ("a", "b"))
    o = parse_args(["--exchange", "", "--routing-key", "out", "--declare-queue", "out"])
    assert (o.exchange, o.routing_key, o.declare_queues) == ("", "out", ("out",))


def test_default_exchange_needs_a_routing_key(monkeypatch):
    monkeypatch.delenv("RABBITMQ_EXCHANGE", raising=False)
    monkeypatch.delenv("RABBITMQ_ROUTING_KEY", raising=False)
    with pytest.raises(SystemExit):
        parse_args([])
