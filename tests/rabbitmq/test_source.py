"""The RabbitMQ source against a real broker, driven as the SDK drives it
(streams, open, poll, acked, close), without an engine."""

import time

import pika
import pytest

import broker
from rabbitmq_source import RabbitMQSource, SourceOptions, parse_args, parse_id


def make_source(rabbit, *queues, **kw):
    kw.setdefault("reconnect_min", 0.05)
    kw.setdefault("reconnect_max", 0.5)
    src = RabbitMQSource(SourceOptions(url=rabbit.url, queues=tuple(queues), **kw))
    for spec in src.streams():
        src.open(spec.name, 0)
    return src


def poll_until(src, n, max_events=1000, timeout=10.0):
    """Polls until n messages came (or timeout); returns them."""
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        got.extend(src.poll(max_events, 0.1))
    return got


def record_acks(src, queue):
    """Wraps the channel's basic_ack to record (tag, multiple)."""
    ch = src._channels[queue]
    calls = []
    real = ch.basic_ack

    def basic_ack(delivery_tag=0, multiple=False):
        calls.append((delivery_tag, multiple))
        return real(delivery_tag=delivery_tag, multiple=multiple)

    ch.basic_ack = basic_ack
    return calls


def test_one_stream_per_queue_named_after_it(rabbit):
    src = RabbitMQSource(SourceOptions(url=rabbit.url, queues=("a", "b")))
    assert [s.name for s in src.streams()] == ["a", "b"]
    assert [s.resume_hint for s in src.streams()] == [0, 0]


def test_poll_gives_messages_with_ids_from_message_id(rabbit, queue):
    broker.publish(rabbit.url, queue, 5)
    src = make_source(rabbit, queue)
    got = poll_until(src, 5)
    assert [(m.stream, m.id, m.payload) for m in got] == [(queue, i, b"m%d" % i) for i in range(1, 6)]
    assert all(m.key == b"" for m in got)
    src.close()


def test_poll_never_returns_more_than_max_events(rabbit, queue):
    broker.publish(rabbit.url, queue, 20)
    src = make_source(rabbit, queue, prefetch=50)
    sizes = []
    got = []
    deadline = time.monotonic() + 10
    while len(got) < 20 and time.monotonic() < deadline:
        batch = src.poll(7, 0.1)
        sizes.append(len(batch))
        got.extend(batch)
    assert max(sizes) <= 7
    assert [m.id for m in got] == list(range(1, 21))
    src.close()


def test_poll_waits_at_most_its_timeout_when_the_queue_is_empty(rabbit, queue):
    src = make_source(rabbit, queue)
    src.poll(10, 0.1)  # connects
    t = time.monotonic()
    assert src.poll(10, 0.3) == []
    assert 0.25 <= time.monotonic() - t < 1.5
    src.close()


def test_broker_is_acknowledged_only_up_to_the_engines_ack(rabbit, queue):
    broker.publish(rabbit.url, queue, 10)
    src = make_source(rabbit, queue)
    assert len(poll_until(src, 10)) == 10
    src.acked(queue, 4)
    src.close()  # the broker requeues what is not acknowledged
    left = broker.drain(rabbit.url, queue)
    assert [int(m.message_id) for m in left] == list(range(5, 11))
    assert all(m.redelivered for m in left)


def test_nothing_is_acknowledged_without_acked(rabbit, queue):
    broker.publish(rabbit.url, queue, 6)
    src = make_source(rabbit, queue)
    assert len(poll_until(src, 6)) == 6
    src.close()
    assert broker.ready_count(rabbit.url, queue) == 6


def test_one_multiple_ack_covers_a_run_of_ids(rabbit, queue):
    broker.publish(rabbit.url, queue, 10)
    src = make_source(rabbit, queue, prefetch=100)
    src.poll(1, 1.0)  # connect
    calls = record_acks(src, queue)
    assert len(poll_until(src, 9)) == 9
    src.acked(queue, 8)
    assert calls == [(8, True)]
    src.acked(queue, 9)
    assert calls[-1] == (9, False)
    assert src.unacked(queue) == [10]
    src.close()
    assert [int(m.message_id) for m in broker.drain(rabbit.url, queue)] == [10]


def test_ids_out_of_delivery_order_are_acknowledged_one_by_one(rabbit, queue):
    # A publisher bug: 5 comes after 7. The engine would drop 5 as a
    # duplicate; the source holds it and acknowledges it with 7.
    broker.publish(rabbit.url, queue, [1, 2, 7, 5, 9])
    src = make_source(rabbit, queue)
    got = poll_until(src, 4)
    assert [m.id for m in got] == [1, 2, 7, 9]
    assert src.stats["id_not_increasing"] == 1
    src.acked(queue, 7)
    assert src.unacked(queue) == [9]
    src.close()
    assert [int(m.message_id) for m in broker.drain(rabbit.url, queue)] == [9]


def test_message_without_valid_id_is_dead_lettered_not_requeued(rabbit, request):
    q = f"dlx-src-{request.node.name}"
    dlq = q + "-dead"
    broker.declare(rabbit.url, dlq)
    broker.declare(rabbit.url, q, **{
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": dlq,
    })
    P = pika.BasicProperties
    broker.publish_raw(rabbit.url, q, [
        (b"ok1", P(message_id="1")),
        (b"none", P()),
        (b"word", P(message_id="abc")),
        (b"zero", P(message_id="0")),
        (b"neg", P(message_id="-3")),
        (b"big", P(message_id=str(2**64))),
        (b"ok2", P(message_id=" 2 ")),
    ])
    src = make_source(rabbit, q)
    got = poll_until(src, 2)
    assert [(m.id, m.payload) for m in got] == [(1, b"ok1"), (2, b"ok2")]
    assert src.stats["rejected_bad_id"] == 5
    src.acked(q, 2)
    src.close()
    assert broker.ready_count(rabbit.url, q) == 0
    dead = broker.drain(rabbit.url, dlq)
    assert sorted(m.body for m in dead) == sorted([b"none", b"word", b"zero", b"neg", b"big"])
    broker.delete(rabbit.url, q, dlq)


def test_id_key_and_event_time_from_headers_and_timestamp(rabbit, queue):
    P = pika.BasicProperties
    broker.publish_raw(rabbit.url, queue, [
        (b"a", P(headers={"seq": 10, "k": "user-1"}, timestamp=1_700_000_000)),
        (b"b", P(headers={"seq": "11", "k": b"user-2"})),
        (b"c", P(headers={"seq": 12})),
    ])
    src = make_source(rabbit, queue, id_from="header:seq", key_header="k")
    got = poll_until(src, 3)
    assert [(m.id, m.key, m.event_time) for m in got] == [
        (10, b"user-1", 1_700_000_000_000_000),
        (11, b"user-2", 0),
        (12, b"", 0),
    ]
    src.close()


def test_queues_are_separate_streams_with_their_own_acks(rabbit, request):
    qa, qb = f"{request.node.name}-a", f"{request.node.name}-b"
    broker.publish(rabbit.url, qa, 5)
    broker.publish(rabbit.url, qb, 5, body=lambda i: b"b%d" % i)
    src = make_source(rabbit, qa, qb)
    got = poll_until(src, 10)
    assert sorted((m.stream, m.id) for m in got) == sorted(
        [(qa, i) for i in range(1, 6)] + [(qb, i) for i in range(1, 6)]
    )
    # Both queues are served (round-robin), not one after the other.
    assert {m.stream for m in got[:4]} == {qa, qb}
    src.acked(qa, 5)
    src.acked(qb, 2)
    src.close()
    assert broker.ready_count(rabbit.url, qa) == 0
    assert [int(m.message_id) for m in broker.drain(rabbit.url, qb)] == [3, 4, 5]
    broker.delete(rabbit.url, qa, qb)


def test_prefetch_is_the_engines_initial_credits_split_over_the_queues(rabbit, request):
    qa, qb = f"{request.node.name}-a", f"{request.node.name}-b"
    broker.publish(rabbit.url, qa, 20)
    broker.publish(rabbit.url, qb, 20)
    src = make_source(rabbit, qa, qb)
    src.welcome(10, 4)  # the engine holds at most 10 events: 5 per queue
    got = poll_until(src, 10, max_events=4)
    assert sorted((m.stream, m.id) for m in got) == sorted(
        [(qa, i) for i in range(1, 6)] + [(qb, i) for i in range(1, 6)])
    # Nothing more until the engine acknowledges, however many credits.
    assert src.poll(100, 0.3) == []
    src.acked(qa, 5)
    assert [(m.stream, m.id) for m in poll_until(src, 5)] == [(qa, i) for i in range(6, 11)]
    src.close()
    broker.delete(rabbit.url, qa, qb)


def test_a_welcome_with_other_credits_subscribes_again_and_sends_nothing_twice(rabbit, queue):
    broker.publish(rabbit.url, queue, 10)
    src = make_source(rabbit, queue)
    src.welcome(4, 1024)
    assert [m.id for m in poll_until(src, 4)] == [1, 2, 3, 4]
    assert src.poll(100, 0.3) == []  # the window of 4 is full
    # The engine reconnects with more credits: the consumer starts again
    # with prefetch 7; 1..4 come back as redeliveries and are held (the SDK
    # has them), 5..7 are new.
    src.welcome(7, 1024)
    got = poll_until(src, 3)
    assert [m.id for m in got] == [5, 6, 7]
    assert src.stats["resubscribes"] == 1 and src.stats["sent"] == 7
    broker.wait_for(lambda: src.poll(100, 0.05) == [] and src.unacked(queue) == list(range(1, 8)),
                    what="1..4 held again")
    src.acked(queue, 7)
    src.close()
    assert [int(m.message_id) for m in broker.drain(rabbit.url, queue)] == [8, 9, 10]


def test_without_a_welcome_the_prefetch_is_the_first_polls_max_events(rabbit, queue):
    # A source driven without the SDK (no welcome): the first poll's
    # max_events sets the per-queue window.
    broker.publish(rabbit.url, queue, 10)
    src = make_source(rabbit, queue)
    assert [m.id for m in poll_until(src, 3, max_events=3)] == [1, 2, 3]
    # Credits come back, but the engine has not acknowledged: the broker
    # sends nothing more.
    assert src.poll(100, 0.3) == []
    assert broker.ready_count(rabbit.url, queue) == 7
    src.acked(queue, 3)
    assert [m.id for m in poll_until(src, 3, max_events=100)] == [4, 5, 6]
    src.close()


def test_prefetch_flag_overrides_the_credits(rabbit, queue):
    broker.publish(rabbit.url, queue, 10)
    src = make_source(rabbit, queue, prefetch=4)
    src.welcome(100, 1024)
    assert len(poll_until(src, 4, max_events=100)) == 4
    assert src.poll(100, 0.3) == []
    src.close()


def test_ids_the_engine_already_has_are_held_not_sent(rabbit, queue):
    # open() says the engine accepted up to 3: the SDK would not send 1..3
    # again; they stay unacknowledged until acked() covers them.
    broker.publish(rabbit.url, queue, 5)
    src = RabbitMQSource(SourceOptions(url=rabbit.url, queues=(queue,)))
    src.open(queue, 3)
    got = poll_until(src, 2)
    assert [m.id for m in got] == [4, 5]
    assert src.unacked(queue) == [1, 2, 3, 4, 5]
    src.acked(queue, 3)
    src.close()
    assert [int(m.message_id) for m in broker.drain(rabbit.url, queue)] == [4, 5]


def test_after_a_lost_connection_redeliveries_are_held_or_acknowledged(rabbit, queue):
    broker.publish(rabbit.url, queue, 10)
    src = make_source(rabbit, queue)
    assert len(poll_until(src, 10)) == 10
    src.acked(queue, 3)
    # The connection dies: every delivery tag is void, the broker requeues
    # 4..10. The engine acknowledges 6 meanwhile.
    src._lost(ConnectionError("test: connection dropped"))
    src.acked(queue, 6)
    assert src.poll(100, 0.5) == []  # reconnects; nothing new for the engine
    broker.wait_for(lambda: src.poll(100, 0.05) == [] and src.unacked(queue) == [7, 8, 9, 10],
                    what="redeliveries 7..10 held")
    assert src.stats["acked_on_redelivery"] == 3  # 4, 5, 6
    assert src.stats["sent"] == 10  # nothing was sent twice
    src.acked(queue, 10)
    src.close()
    assert broker.ready_count(rabbit.url, queue) == 0


def test_unreachable_broker_makes_poll_wait_not_fail(rabbit):
    src = RabbitMQSource(SourceOptions(url="amqp://guest:guest@127.0.0.1:1/%2F",
                                       queues=("q",), reconnect_min=0.05, reconnect_max=0.1))
    src.open("q", 0)
    t = time.monotonic()
    assert src.poll(10, 0.3) == []
    assert time.monotonic() - t < 2
    assert src.stats["connect_failures"] >= 1
    src.close()


def test_missing_queue_without_declare_is_retried_and_declare_creates_it(rabbit, request):
    q = f"{request.node.name}-new"
    src = make_source(rabbit, q)
    assert src.poll(10, 0.2) == []
    assert src.stats["connect_failures"] >= 1  # 404 NOT_FOUND: retried
    src.close()
    src = make_source(rabbit, q, declare=True)
    src.poll(10, 0.2)
    assert src.stats["connects"] == 1
    broker.publish(rabbit.url, q, 2, declare_queue=False)
    assert [m.id for m in poll_until(src, 2)] == [1, 2]
    src.close()
    broker.delete(rabbit.url, q)


@pytest.mark.parametrize("value,expected", [
    ("1", 1), ("42", 42), (" 7 ", 7), (b"9", 9), (5, 5), (str(2**64 - 1), 2**64 - 1),
    (None, None), ("", None), ("0", None), (0, None), ("-1", None), ("+1", None),
    ("1_000", None), ("1.5", None), ("abc", None), (str(2**64), None), (True, None),
    ("١٢", None), (1.0, None),
])
def test_parse_id(value, expected):
    assert parse_id(value) == expected


def test_flags_win_over_environment(monkeypatch):
    monkeypatch.setenv("RABBITMQ_URL", "amqp://env/")
    monkeypatch.setenv("RABBITMQ_QUEUES", "x, y")
    monkeypatch.setenv("RABBITMQ_ID_FROM", "header:n")
    o = parse_args([])
    assert (o.url, o.queues, o.id_from) == ("amqp://env/", ("x", "y"), "header:n")
    o = parse_args(["--url", "amqp://flag/", "--queue", "z", "--id-from", "message_id"])
    assert (o.url, o.queues, o.id_from) == ("amqp://flag/", ("z",), "message_id")


def test_bad_flags_are_refused(monkeypatch, capsys):
    monkeypatch.delenv("RABBITMQ_QUEUES", raising=False)
    for argv in ([], ["--queue", "a", "--id-from", "body"], ["--queue", "a", "--queue", "a"],
                 ["--queue", "a", "--prefetch", "70000"]):
        with pytest.raises(SystemExit) as e:
            parse_args(argv)
        assert e.value.code == 2
