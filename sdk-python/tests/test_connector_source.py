"""run_source against the strict fake engine (connector_engine.py), in a
thread of the test process; process-level behaviour (exit codes, SIGTERM,
refusal of a spawned connector) is in test_connector_process.py.

Nothing here sleeps to synchronise: every wait is a receive with a
timeout, a barrier (a heartbeat round trip), or a thread join.
"""

import shutil
import tempfile
import threading

import pytest

from connector_engine import TOKEN, FakeEngine, Running
from wallaroo._pb import wallaroo_pb2 as pb
from wallaroo.connector import (
    ConnectorConfig,
    End,
    Message,
    Source,
    StreamSpec,
    run_source,
)

DEADLINE_LONG = 5.0  # a drain that must not time out during the test


class ListSource(Source):
    """Serves fixed messages per stream and records every call.

    ``data`` maps a stream name to its message ids. ``open`` skips the ids
    up to resume_after unless ``skip_on_open`` is False. ``end`` makes poll
    return End after a stream's last message.
    """

    def __init__(self, data, hints=None, end=True, skip_on_open=True, payload_size=0):
        self.data = {name: list(ids) for name, ids in data.items()}
        self.hints = hints or {}
        self.end = end
        self.skip_on_open = skip_on_open
        self.payload_size = payload_size
        self.pos = {name: 0 for name in data}
        self.ended = set()
        self.calls = []
        self.after_poll = None  # called with the poll count

    def streams(self):
        return [StreamSpec(name, self.hints.get(name, 0)) for name in self.data]

    def welcome(self, initial_credits, max_batch_events):
        self.calls.append(("welcome", initial_credits, max_batch_events))

    def open(self, stream, resume_after):
        self.calls.append(("open", stream, resume_after))
        if self.skip_on_open:
            ids = self.data[stream]
            while self.pos[stream] < len(ids) and ids[self.pos[stream]] <= resume_after:
                self.pos[stream] += 1

    def payload(self, name, i):
        text = f"{name}-{i}".encode()
        return text + b"." * max(0, self.payload_size - len(text))

    def poll(self, max_events, timeout):
        self.calls.append(("poll", max_events))
        out = []
        for name, ids in self.data.items():
            while len(out) < max_events and self.pos[name] < len(ids):
                i = ids[self.pos[name]]
                out.append(Message(name, i, self.payload(name, i)))
                self.pos[name] += 1
            if self.end and self.pos[name] == len(ids) and name not in self.ended:
                self.ended.add(name)
                out.append(End(name))
        polls = sum(1 for c in self.calls if c[0] == "poll")
        if self.after_poll:
            self.after_poll(polls)
        return out

    def acked(self, stream, up_to):
        self.calls.append(("acked", stream, up_to))

    def close(self):
        self.calls.append(("close",))

    def of(self, kind):
        return [c[1:] for c in self.calls if c[0] == kind]


@pytest.fixture
def directory():
    # A short directory: ipc:// paths are limited to ~100 bytes.
    d = tempfile.mkdtemp(prefix="wl-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def engine(directory):
    eng = FakeEngine(directory, pb.ROLE_SOURCE)
    yield eng
    eng.close()


@pytest.fixture
def start(engine):
    """start(source, **run_source kwargs): run it against ``engine``."""
    runs = []

    def go(source, engine=engine, **kwargs):
        config = ConnectorConfig(
            address=engine.addr,
            token=TOKEN,
            program="src",
            instance=2,
            reconnect_backoff_min=0.01,
            reconnect_backoff_max=0.05,
        )
        run = Running(run_source, source, config, **kwargs)
        runs.append(run)
        return run

    yield go
    # Stop, and take the engine away so that no drain waits for acks.
    for run in runs:
        run.stop.set()
    engine.close()
    for run in runs:
        run.finish()


def test_hello_names_the_source_role_token_and_identity(engine, start):
    start(ListSource({"a": []}))
    hello = engine.accept(initial_credits=10)
    assert (hello.version_major, hello.version_minor, hello.role) == (1, 0, pb.ROLE_SOURCE)
    assert (hello.token, hello.program, hello.instance) == (TOKEN, "src", 2)
    assert list(hello.capabilities) == ["sdk:python/0.1"]
    assert "2pc" not in hello.capabilities


def test_end_stream_then_stream_ended_then_goodbye_and_exit_0(engine, start):
    source = ListSource({"a": [1, 2, 3]})
    run = start(source)
    engine.accept(initial_credits=10)
    engine.open_streams(1)
    assert engine.events(3) == [("a", 1, b"a-1"), ("a", 2, b"a-2"), ("a", 3, b"a-3")]
    end = engine.expect("end_stream")
    assert (end.stream_id, end.last_id) == (1, 3)
    engine.send(stream_ended=pb.StreamEnded(stream_id=1, up_to=3))
    assert engine.expect("goodbye").reason == "every stream ended"
    assert run.status() == 0
    # StreamEnded counts as the stream's last acknowledgement; close comes last.
    assert source.of("acked") == [("a", 3)]
    assert source.calls[-1] == ("close",)


def test_the_engines_resume_after_wins_over_the_hint(engine, start):
    source = ListSource({"a": range(1, 9), "b": range(1, 9)}, hints={"a": 5, "b": 2}, end=False)
    start(source)
    engine.accept(initial_credits=100)
    opened = engine.open_streams(2, resume={"a": 3, "b": 6})
    assert {name: hint for name, (_, hint) in opened.items()} == {"a": 5, "b": 2}
    got = engine.events(5 + 2)
    assert sorted(source.of("open")) == [("a", 3), ("b", 6)]
    assert [i for name, i, _ in got if name == "a"] == [4, 5, 6, 7, 8]
    assert [i for name, i, _ in got if name == "b"] == [7, 8]


def test_messages_the_engine_already_has_are_not_sent(engine, start):
    # A source that cannot seek (a broker redelivering) gives ids <= resume_after.
    source = ListSource({"a": [1, 2, 3, 4, 5, 6]}, skip_on_open=False)
    start(source)
    engine.accept(initial_credits=6)
    engine.open_streams(1, resume={"a": 4})
    assert [i for _, i, _ in engine.events(2)] == [5, 6]
    # The skipped ids cost no credit: 4 are left, as the engine counts them.
    assert engine.credits == 4


def test_credits_are_never_exceeded(engine, start):
    source = ListSource({"a": range(1, 21)}, end=False)
    start(source)
    engine.accept(initial_credits=3, max_batch_events=2)
    engine.open_streams(1)
    assert [i for _, i, _ in engine.events(3)] == [1, 2, 3]
    assert engine.barrier() == []  # out of credit: nothing more
    engine.send(credit=pb.Credit(events=4))
    assert [i for _, i, _ in engine.events(4)] == [4, 5, 6, 7]
    assert engine.barrier() == []
    # poll was never asked for more than min(credits left, max_batch_events).
    assert source.of("poll") and all(n <= 2 for (n,) in source.of("poll"))
    assert source.of("poll")[:2] == [(2,), (1,)]


def test_welcome_gets_the_credits_and_batch_size_before_open_and_poll(engine, start):
    source = ListSource({"a": range(1, 4)}, end=False)
    start(source)
    engine.accept(initial_credits=3, max_batch_events=2)
    engine.open_streams(1)
    engine.events(3)
    assert source.calls[:3] == [("welcome", 3, 2), ("open", "a", 0), ("poll", 2)]


def test_welcome_is_called_again_on_every_connection_with_its_values(engine, start):
    source = ListSource({"a": range(1, 7)}, end=False)
    start(source)
    engine.accept(initial_credits=3)  # max_batch_events 0: the SDK's default
    engine.open_streams(1)
    engine.events(3)
    engine.drop()
    engine.accept(initial_credits=50, max_batch_events=8)
    engine.open_streams(1)
    assert [i for _, i, _ in engine.events(3)] == [4, 5, 6]
    assert source.of("welcome") == [(3, 1024), (50, 8)]
    # The first poll of the new connection comes right after its welcome.
    second = source.calls.index(("welcome", 50, 8))
    assert source.calls[second + 1] == ("poll", 8)
    assert source.of("open") == [("a", 0)]  # open is once per run


def test_a_source_raising_in_welcome_reports_it_and_exits_1(engine, start):
    class Broken(ListSource):
        def welcome(self, initial_credits, max_batch_events):
            raise ValueError("prefetch too large")

    run = start(Broken({"a": [1]}))
    engine.accept(initial_credits=3)
    error = engine.expect("error")
    assert "Broken.welcome(3, 1024) raised ValueError: prefetch too large" in error.message
    assert run.status() == 1


def test_acked_gets_the_stream_name_and_only_advances(engine, start):
    source = ListSource({"a": [1, 2], "b": [1, 2, 3]}, end=False)
    start(source)
    engine.accept(initial_credits=10)
    opened = engine.open_streams(2)
    engine.events(5)
    b_id, a_id = opened["b"][0], opened["a"][0]
    engine.send(ack=pb.Ack(stream_id=b_id, up_to=3, incarnation=7))
    engine.send(ack=pb.Ack(stream_id=b_id, up_to=3, incarnation=7))
    engine.send(ack=pb.Ack(stream_id=a_id, up_to=1, incarnation=7))
    engine.barrier()
    assert source.of("acked") == [("b", 3), ("a", 1)]


def test_unacknowledged_messages_are_sent_again_above_resume_after_after_a_reconnect(engine, start):
    source = ListSource({"a": range(1, 7)}, end=False)
    start(source)
    engine.accept(initial_credits=100)
    engine.open_streams(1)
    assert [i for _, i, _ in engine.events(6)] == [1, 2, 3, 4, 5, 6]
    engine.send(ack=pb.Ack(stream_id=1, up_to=2, incarnation=7))
    engine.barrier()
    assert source.of("acked") == [("a", 2)]

    engine.drop()  # the engine crashed, or the network failed
    engine.accept(initial_credits=100)
    opened = engine.open_streams(1, resume={"a": 4})  # the engine had accepted up to 4
    assert opened["a"][1] == 2  # the hint is what was acknowledged
    assert [i for _, i, _ in engine.events(2)] == [5, 6]
    assert engine.barrier() == []
    # open was called once: the SDK, not the source, sent 5 and 6 again.
    assert source.of("open") == [("a", 0)]
    engine.send(ack=pb.Ack(stream_id=1, up_to=6, incarnation=7))
    engine.barrier()
    assert source.of("acked") == [("a", 2), ("a", 6)]


def test_a_stream_ending_during_a_reconnect_is_ended_again(engine, start):
    source = ListSource({"a": [1, 2]})
    run = start(source)
    engine.accept(initial_credits=100)
    engine.open_streams(1)
    engine.events(2)
    engine.expect("end_stream")
    engine.drop()
    engine.accept(initial_credits=100)
    engine.open_streams(1, resume={"a": 1})
    assert [i for _, i, _ in engine.events(1)] == [2]
    assert engine.expect("end_stream").last_id == 2
    engine.send(stream_ended=pb.StreamEnded(stream_id=1, up_to=2))
    engine.expect("goodbye")
    assert run.status() == 0


def test_reconnect_dials_the_new_address_and_resumes_there(directory, engine, start):
    other = FakeEngine(directory, pb.ROLE_SOURCE, name="other")
    try:
        source = ListSource({"a": range(1, 4)}, end=False)
        start(source)
        engine.accept(initial_credits=100)
        engine.open_streams(1)
        engine.events(3)
        engine.send(reconnect=pb.Reconnect(address=other.addr, reason="moved"))
        hello = other.accept(initial_credits=100)
        assert hello.token == TOKEN
        other.open_streams(1, resume={"a": 1})
        assert [i for _, i, _ in other.events(2)] == [2, 3]
        engine.wait_disconnected()
    finally:
        other.close()


def test_heartbeats_from_the_engine_are_answered(engine, start):
    start(ListSource({"a": [1]}, end=False))
    engine.accept(initial_credits=10)
    engine.open_streams(1)
    engine.events(1)
    engine.send(heartbeat=pb.Heartbeat(seq=42, reply=True))
    hb = engine.expect("heartbeat")
    assert (hb.seq, hb.reply) == (42, False)


def test_an_engine_that_stops_answering_heartbeats_is_left_and_redialed(engine, start):
    start(ListSource({"a": [1]}, end=False))
    engine.answer_heartbeats = False
    engine.accept(initial_credits=10, heartbeat_interval_ms=30, heartbeat_timeout_ms=150)
    engine.open_streams(1)
    engine.events(1)
    hb = engine.expect("heartbeat")  # the connector asks when the engine is quiet
    assert hb.reply
    # Unanswered: after heartbeat_timeout_ms the connector gives the connection
    # up and dials again.
    assert engine.expect("hello").token == TOKEN


def test_undecodable_and_unexpected_frames_get_bad_frame_and_the_source_goes_on(engine, start):
    start(ListSource({"a": [1, 2]}, end=False))
    engine.accept(initial_credits=1)
    engine.open_streams(1)
    engine.events(1)
    engine.send_raw(b"\x08\x01\x0a\xff")
    error = engine.expect("error")
    assert error.code == pb.ERROR_CODE_BAD_FRAME
    assert "undecodable frame of 4 bytes" in error.message
    engine.send_raw(b"")
    assert "no body" in engine.expect("error").message
    engine.send(batch=pb.Batch(batch_id=1))
    assert engine.expect("error").message == "batch not allowed while open"
    engine.send(ack=pb.Ack(stream_id=9, up_to=1))
    assert engine.expect("error").message == "ack for stream id 9, which is not open"
    engine.send(credit=pb.Credit(events=1))
    assert [i for _, i, _ in engine.events(1)] == [2]


def test_a_poll_result_over_the_frame_limit_is_split_into_batches(engine, start):
    source = ListSource({"a": range(1, 11)}, end=False, payload_size=500)
    start(source)
    engine.accept(initial_credits=10, max_message_bytes=2048)
    engine.open_streams(1)
    sizes = []
    got = []
    while len(got) < 10:
        batch = engine.expect("batch")
        sizes.append(pb.Frame(batch=batch).ByteSize())
        got.extend(e.message_id for e in batch.events)
    assert got == list(range(1, 11))
    assert len(sizes) > 1 and max(sizes) <= 2048 - 4
    assert source.of("poll")[0] == (10,)  # one poll, several frames


def test_a_message_too_large_for_any_frame_fails_the_run(engine, start):
    source = ListSource({"a": [1]}, payload_size=3000)
    run = start(source)
    engine.accept(initial_credits=10, max_message_bytes=2048)
    engine.open_streams(1)
    error = engine.expect("error")
    assert error.code == pb.ERROR_CODE_INTERNAL
    assert "over the engine's limit of 2044 bytes" in error.message
    assert run.status() == 1
    assert source.calls[-1] == ("close",)


def test_a_poll_returning_more_than_max_events_fails_instead_of_overspending(engine, start):
    class Greedy(ListSource):
        def poll(self, max_events, timeout):
            return [Message("a", i, b"x") for i in range(1, max_events + 2)]

    run = start(Greedy({"a": []}))
    engine.accept(initial_credits=3)
    engine.open_streams(1)
    error = engine.expect("error")
    assert error.code == pb.ERROR_CODE_INTERNAL
    assert "returned 4 messages" in error.message
    assert run.status() == 1


def test_a_source_raising_in_poll_reports_it_and_exits_1(engine, start, capfd):
    class Broken(ListSource):
        def poll(self, max_events, timeout):
            raise RuntimeError("broker unreachable")

    source = Broken({"a": []})
    run = start(source)
    engine.accept(initial_credits=3)
    engine.open_streams(1)
    error = engine.expect("error")
    assert "Broken.poll(3, 0.1) raised RuntimeError: broker unreachable" in error.message
    assert run.status() == 1
    assert source.calls[-1] == ("close",)
    assert "Traceback" in capfd.readouterr().err


def test_stop_waits_for_the_outstanding_acks_then_closes_and_says_goodbye(engine, start):
    source = ListSource({"a": range(1, 100)}, end=False)
    run = start(source, drain_timeout=DEADLINE_LONG)
    source.after_poll = lambda n: run.stop.set() if n == 2 else None
    engine.accept(initial_credits=100, max_batch_events=3)
    engine.open_streams(1)
    assert [i for _, i, _ in engine.events(6)] == [1, 2, 3, 4, 5, 6]
    assert engine.barrier() == []  # polling stopped, and no goodbye: 6 unacked
    assert ("close",) not in source.calls
    engine.send(ack=pb.Ack(stream_id=1, up_to=6, incarnation=7))
    assert engine.expect("goodbye").reason == "stopped"
    assert run.status() == 0
    assert len(source.of("poll")) == 2
    assert source.calls[-2:] == [("acked", "a", 6), ("close",)]


def test_stop_gives_up_waiting_for_acks_after_drain_timeout(engine, start):
    source = ListSource({"a": range(1, 100)}, end=False)
    run = start(source, drain_timeout=0.2)
    source.after_poll = lambda n: run.stop.set()
    engine.accept(initial_credits=100, max_batch_events=3)
    engine.open_streams(1)
    engine.events(3)
    assert engine.expect("goodbye").reason == "stopped"
    assert run.status() == 0
    assert source.of("acked") == []


def test_a_refused_accepted_source_exits_3(engine, start, capfd):
    run = start(ListSource({"a": []}))
    engine.expect("hello")
    engine.send(refuse=pb.Refuse(code=pb.ERROR_CODE_BAD_TOKEN, message="token does not match"))
    assert run.status() == 3
    err = capfd.readouterr().err
    assert "refused this source: ERROR_CODE_BAD_TOKEN: token does not match" in err
    assert "token_env" in err


def test_an_accepted_source_waits_for_the_engine_to_listen(directory, start):
    source = ListSource({"a": [1]})
    late = FakeEngine.__new__(FakeEngine)  # address only, nobody listening yet
    late.addr = f"ipc://{directory}/late.sock"
    run = start(source, engine=late)
    engine = FakeEngine(directory, pb.ROLE_SOURCE, name="late")
    try:
        engine.accept(initial_credits=10)
        engine.open_streams(1)
        assert engine.events(1) == [("a", 1, b"a-1")]
        engine.send(goodbye=pb.Goodbye(reason="engine shutting down"))
        assert run.status() == 0
        assert source.calls[-1] == ("close",)
    finally:
        engine.close()


def test_the_engines_goodbye_closes_the_source_and_exits_0(engine, start):
    source = ListSource({"a": [1]}, end=False)
    run = start(source)
    engine.accept(initial_credits=10)
    engine.open_streams(1)
    engine.events(1)
    engine.send(goodbye=pb.Goodbye(reason="engine shutting down"))
    assert run.status() == 0
    assert source.calls[-1] == ("close",)


def test_streams_must_be_valid(engine, start):
    class Twice(ListSource):
        def streams(self):
            return [StreamSpec("a"), StreamSpec("a")]

    source = Twice({"a": []})
    run = start(source)
    assert run.status() == 1
    assert source.calls == [("close",)]


def test_run_source_takes_a_source():
    with pytest.raises(TypeError, match="takes a wallaroo.connector.Source"):
        run_source(object(), ConnectorConfig(address="ipc:///nowhere", token="t"))
    with pytest.raises(TypeError):
        Source()  # streams and poll are abstract


def test_stop_from_another_thread_while_waiting_for_the_engine(directory):
    config = ConnectorConfig(address=f"ipc://{directory}/nobody.sock", token="t")
    stop = threading.Event()
    stop.set()
    assert run_source(ListSource({"a": []}), config, stop=stop) == 0


def test_the_module_docstring_example_runs(engine, start):
    import textwrap

    import wallaroo.connector

    doc = wallaroo.connector.__doc__
    code = textwrap.dedent(doc[doc.index("    from __future__"):doc.index("    if __name__")])
    namespace = {}
    exec(compile(code, "connector-docstring-example", "exec"), namespace)
    run = start(namespace["Numbers"]())
    engine.accept(initial_credits=30)
    engine.open_streams(1, resume={"numbers": 10})
    assert [i for _, i, _ in engine.events(30)] == list(range(11, 41))
    assert engine.barrier() == []
    engine.send(credit=pb.Credit(events=100))
    assert [p for _, _, p in engine.events(60)][-1] == b"100"
    assert engine.expect("end_stream").last_id == 100
    engine.send(stream_ended=pb.StreamEnded(stream_id=1, up_to=100))
    engine.expect("goodbye")
    assert run.status() == 0
