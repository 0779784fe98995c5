"""Broker restarts in the middle of a stream (the RabbitMQ application
stopped and started again: every connection closed, the same port, the
same data; Broker.restart_app, 2 s instead of a new VM's 6): nothing is
lost, the broker is acknowledged only for what the engine acknowledged,
and the connectors carry on by themselves."""

import time

import pytest

import broker
from rabbitmq_sink import RabbitMQSink, SinkError, SinkOptions
from rabbitmq_source import RabbitMQSource, SourceOptions
from wallaroo.connector import Output


def test_source_loses_nothing_across_a_broker_restart(rabbit, queue):
    broker.publish(rabbit.url, queue, 200)
    src = RabbitMQSource(SourceOptions(url=rabbit.url, queues=(queue,),
                                       reconnect_min=0.1, reconnect_max=0.5))
    src.open(queue, 0)
    sent = []
    while len(sent) < 50:
        sent.extend(src.poll(50, 0.2))
    assert [m.id for m in sent] == list(range(1, 51))
    src.acked(queue, 20)  # the engine is done with 1..20, not 21..50

    rabbit.restart_app()

    # The source notices, reconnects with backoff, and the broker redelivers
    # 21..50 (never acknowledged: they survived the restart). The SDK
    # already has them, so they are held, not sent again.
    deadline = time.monotonic() + 30
    while src.stats["connects"] < 2 or len(src.unacked(queue)) < 30:
        sent.extend(src.poll(50, 0.2))
        assert time.monotonic() < deadline, "no reconnect after the restart"
    assert src.stats["connection_losses"] >= 1
    assert src.unacked(queue)[:30] == list(range(21, 51))

    # Go on to the end, acknowledging as the engine would.
    while len(sent) < 200 and time.monotonic() < deadline:
        src.acked(queue, sent[-1].id)
        sent.extend(src.poll(50, 0.2))
    assert [m.id for m in sent] == list(range(1, 201))  # each exactly once
    src.acked(queue, 200)
    assert src.stats["acked_on_redelivery"] == 0  # 1..20 were acknowledged before
    src.close()
    assert broker.ready_count(rabbit.url, queue) == 0


def test_sink_fails_while_the_broker_is_down_and_delivers_after(rabbit, queue):
    sink = RabbitMQSink(SinkOptions(url=rabbit.url, routing_key=queue, connect_retry=0.5))
    first = [Output(b"", b"a%d" % i, 0) for i in range(100)]
    sink.write(0, first)
    rabbit.stop_app()
    try:
        second = [Output(b"", b"b%d" % i, 0) for i in range(100)]
        with pytest.raises(SinkError):
            sink.write(0, second)  # the engine would send it again
    finally:
        rabbit.start_app()
    sink.write(0, second)  # the engine's resend
    sink.close()
    got = [m.body for m in broker.drain(rabbit.url, queue)]
    # The confirmed batch survived the restart (persistent messages in a
    # durable queue), and the refused one arrived once it was resent.
    assert got == [o.payload for o in first + second]
