"""Connectors (protocol section 6): source and sink programs, spawned by
the engine or dialing in, against the real engine binary. The connector
is tests/engine/rawconnector.py (raw protocol, no SDK) or, where the test
needs to see every frame, the test itself."""
import collections
import os
import sys
import time

import pynng
import pytest

from conftest import ROOT, raw_program

sys.path.insert(0, os.path.join(ROOT, "sdk-python", "wallaroo", "_pb"))
import wallaroo_pb2 as pb  # noqa: E402

RAWCONN = os.path.join(ROOT, "tests", "engine", "rawconnector.py")


def conn_program(name, instances=1, **env):
    envs = ", ".join('%s: "%s"' % (k, v) for k, v in env.items())
    return ("  %s:\n    argv: [%s, %s]\n    instances: %d\n    env: {%s}\n"
            % (name, sys.executable, RAWCONN, instances, envs))


def source_topology(tmp_path, limits="", **env):
    env.setdefault("WL_STATE", str(tmp_path))
    return ("application: csrc\n" + limits +
            "programs:\n" + raw_program(instances=2) + conn_program("feed", **env) +
            "sources:\n  in: {type: connector, program: feed}\n"
            "steps:\n  up: {kind: stateless, program: raw, function: upper, inputs: [in]}\n"
            "sinks:\n  out: {type: file, path: out.txt, framing: line, inputs: [up]}\n")


def expected_lines(streams, count):
    return collections.Counter(b"S%d-%d" % (s, i) for s in range(streams)
                               for i in range(1, count + 1))


def out_lines(path):
    return path.read_bytes().splitlines()


def check_exactly_once(path, streams, count):
    lines = out_lines(path)
    got = collections.Counter(lines)
    want = expected_lines(streams, count)
    assert got - want == collections.Counter(), "unexpected or duplicated lines"
    assert want - got == collections.Counter(), "%d lines missing" % sum((want - got).values())
    # Each stream in order: the engine keeps per-stream order for one
    # stream routed by its origin.
    for s in range(streams):
        ids = [int(x.split(b"-")[1]) for x in lines if x.startswith(b"S%d-" % s)]
        assert ids == sorted(ids), "stream s%d out of order" % s


def test_spawned_source_delivers_every_message_and_the_engine_exits_when_it_ends(engine, tmp_path):
    e = engine(source_topology(tmp_path, WL_COUNT=3000, WL_STREAMS=3))
    assert e.wait() == 0, e.log()
    check_exactly_once(tmp_path / "out.txt", 3, 3000)
    s = e.summary()
    assert s["source=in"]["events"] == "9000"
    assert s["source=in"]["duplicates"] == "0"
    # "Ingest to done": one sample per event (each has one output, handed
    # to the sink), percentiles in order and within the run's length.
    lat = s["latency source=in"]
    assert lat["samples"] == "9000"
    p = [float(lat[k]) for k in ("p50_us", "p90_us", "p99_us", "p99.9_us", "p99.99_us", "max_us")]
    assert 0 < p[0] <= p[1] <= p[2] <= p[3] <= p[4] <= p[5] < 60e6, lat
    assert float(lat["p50_bin_us"]) >= p[0] and float(lat["p50_bin_us"]) < 2 * p[0] + 0.002, lat
    e.wait_for(r"CONN-READY source in/0 pid \d+ connected")
    e.wait_for(r"CONN-ENDED source in/0 finished")
    # The connector saw every position acknowledged.
    for i in range(3):
        assert (tmp_path / ("acked-s%d" % i)).read_text() == "3000"


def test_a_source_killed_mid_stream_resumes_without_loss_or_duplicates(engine, tmp_path):
    e = engine(source_topology(tmp_path, WL_COUNT=5000, WL_STREAMS=2, WL_FAULT="crash:3000"))
    assert e.wait() == 0, e.log()
    e.wait_for(r"SUP-CRASH source in/0 pid \d+ exited with status 1")
    e.wait_for(r"CONN-STREAM source in/0 opened stream 1 's0': resume after [1-9]\d*")
    check_exactly_once(tmp_path / "out.txt", 2, 5000)


def test_a_source_that_leaves_with_streams_open_is_started_again(engine, tmp_path):
    e = engine(source_topology(tmp_path, WL_COUNT=3000, WL_FAULT="goodbye:1000"))
    assert e.wait() == 0, e.log()
    e.wait_for(r"CONN-STOPPED source in/0 said goodbye with streams still open; it is started again")
    e.wait_for(r"CONN-ENDED source in/0 finished")
    check_exactly_once(tmp_path / "out.txt", 1, 3000)


def test_a_connector_source_after_a_file_source_starts_when_that_ends(engine, tmp_path):
    (tmp_path / "first.txt").write_bytes(b"".join(b"f-%d\n" % i for i in range(1, 3001)))
    e = engine("application: after\n"
               "programs:\n" + raw_program(instances=1) +
               conn_program("feed", WL_STATE=str(tmp_path), WL_COUNT=500) +
               "sources:\n  first: {type: file, path: first.txt, framing: line}\n"
               "  later: {type: connector, program: feed, after: first}\n"
               "steps:\n  up: {kind: stateless, program: raw, function: upper, inputs: [first, later]}\n"
               "sinks:\n  out: {type: file, path: out.txt, framing: line, inputs: [up]}\n")
    assert e.wait() == 0, e.log()
    assert out_lines(tmp_path / "out.txt") == (
        [b"F-%d" % i for i in range(1, 3001)] + [b"S0-%d" % i for i in range(1, 501)])
    assert e.log().index("SRC-END source 'first'") < e.log().index("SUP-SPAWN source later/0")


@pytest.mark.parametrize("fault,tag,code", [
    ("overcredit", "CONN-PROTO", r"batch \d+ has \d+ events but only \d+ credits are left"),
    ("unknown_stream", "CONN-PROTO", r"names stream 99, which is not open"),
    ("zero_id", "CONN-PROTO", r"has message id 0"),
    ("garbage", "CONN-GARBAGE", r"sent 3 bytes that are not a protocol frame"),
])
def test_a_source_breaking_the_protocol_is_dropped_and_restarted_without_loss(
        engine, tmp_path, fault, tag, code):
    e = engine(source_topology(tmp_path, WL_COUNT=2000, WL_FAULT=fault))
    assert e.wait() == 0, e.log()
    e.wait_for(tag + r" source in/0 pid \d+: .*" + code)
    e.wait_for(r"SUP-RESTART source in/0 restarts")
    check_exactly_once(tmp_path / "out.txt", 1, 2000)


def test_a_hung_source_is_killed_and_replaced(engine, tmp_path):
    limits = "limits: {heartbeat_ms: 100, heartbeat_timeout_ms: 500}\n"
    e = engine(source_topology(tmp_path, limits=limits, WL_COUNT=0, WL_FAULT="hang"))
    e.wait_for(r"CONN-HUNG source in/0 pid \d+: no heartbeat answer within "
               r"heartbeat_timeout_ms=500", timeout=20)
    e.wait_for(r"SUP-SPAWN source in/0 pid \d+: .* \(incarnation 2\)")
    e.wait_for(r"CONN-READY source in/0 pid \d+ connected")
    e.terminate()
    assert e.wait() == 0, e.log()


def test_sigterm_drains_an_endless_source_acknowledges_and_says_goodbye(engine, tmp_path):
    e = engine(source_topology(tmp_path, WL_COUNT=0))
    e.wait_for(r"CONN-READY source in/0")
    deadline = time.monotonic() + 20
    while not (tmp_path / "out.txt").exists() or len(out_lines(tmp_path / "out.txt")) < 2000:
        assert time.monotonic() < deadline, e.log()
        time.sleep(0.05)
    e.terminate()
    assert e.wait() == 0, e.log()
    lines = out_lines(tmp_path / "out.txt")
    ids = [int(x.split(b"-")[1]) for x in lines]
    assert ids == list(range(1, len(ids) + 1))
    # Everything accepted was processed and acknowledged before the end.
    assert int((tmp_path / "acked-s0").read_text()) == len(ids)
    assert int(e.summary()["source=in"]["events"]) == len(ids)


# ---- Accepted connectors: the test is the connector and sees every frame.

class Peer:
    """A connector played by the test: dial, hello, and frame helpers."""

    def __init__(self, addr, token, role=pb.ROLE_SOURCE, caps=()):
        self.sock = pynng.Pair1(recv_max_size=64 << 20)
        self.sock.recv_timeout = 5000
        # pair1 takes one peer at a time: until the engine has let go of
        # the previous connection, a new one is turned away.
        deadline = time.monotonic() + 5
        while True:
            try:
                self.sock.dial(addr, block=True)
                break
            except pynng.ConnectionRefused:
                assert time.monotonic() < deadline, "engine keeps refusing %s" % addr
                time.sleep(0.05)
        f = pb.Frame()
        f.hello.version_major = 1
        f.hello.role = role
        f.hello.token = token
        f.hello.program = "test"
        f.hello.capabilities.extend(caps)
        self.send(f)

    def send(self, frame):
        self.sock.send(frame.SerializeToString())

    def expect(self, body, timeout=5.0):
        deadline = time.monotonic() + timeout
        while True:
            assert time.monotonic() < deadline, "no %s frame" % body
            f = pb.Frame.FromString(self.sock.recv())
            got = f.WhichOneof("body")
            if got == "heartbeat" and f.heartbeat.reply and body != "heartbeat":
                r = pb.Frame()
                r.heartbeat.seq = f.heartbeat.seq
                self.send(r)
                continue
            assert got == body, "expected %s, got %s" % (body, f)
            return getattr(f, body)

    def open(self, sid, name, hint=0):
        f = pb.Frame()
        f.open_stream.stream_id = sid
        f.open_stream.name = name
        f.open_stream.resume_hint = hint
        self.send(f)
        return self.expect("stream_opened")

    def batch(self, bid, events):
        f = pb.Frame()
        f.batch.batch_id = bid
        for sid, mid, payload in events:
            ev = f.batch.events.add()
            ev.stream_id = sid
            ev.message_id = mid
            ev.payload = payload
        self.send(f)

    def close(self):
        self.sock.close()


def accepted_topology(tmp_path, port, limits=""):
    return ("application: acc\n" + limits +
            "programs:\n" + raw_program(instances=1) +
            "sources:\n  in: {type: connector, listen: 'tcp://127.0.0.1:%d', "
            "token_env: WL_TEST_TOKEN}\n" % port +
            "steps:\n  up: {kind: stateless, program: raw, function: upper, inputs: [in]}\n"
            "sinks:\n  out: {type: file, path: out.txt, framing: line, inputs: [up]}\n")


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def token_env(monkeypatch):
    monkeypatch.setenv("WL_TEST_TOKEN", "s3cret-token")
    return "s3cret-token"


def test_accepted_source_credits_acks_duplicates_and_end_of_stream(engine, tmp_path, token_env):
    port = free_port()
    e = engine(accepted_topology(tmp_path, port, "limits: {source_credits: 100}\n"))
    e.wait_for(r"CONN-LISTEN source in/0: waiting for a connector on tcp://127.0.0.1:%d" % port)
    e.wait_for("READY")
    p = Peer("tcp://127.0.0.1:%d" % port, token_env)
    w = p.expect("welcome")
    assert w.initial_credits == 100
    # Unknown to the engine: the hint is taken.
    assert p.open(1, "orders", hint=10).resume_after == 10
    # Ids at or below the position are duplicates: dropped, but settled.
    p.batch(1, [(1, i, b"o-%d" % i) for i in range(5, 61)])
    ack = p.expect("ack")
    assert ack.stream_id == 1 and ack.incarnation > 0
    while ack.up_to < 60:
        ack = p.expect("ack")
    assert ack.up_to == 60
    credit = p.expect("credit")
    assert 0 < credit.events <= 56
    f = pb.Frame()
    f.end_stream.stream_id = 1
    f.end_stream.last_id = 60
    p.send(f)
    ended = p.expect("stream_ended")
    assert (ended.stream_id, ended.up_to) == (1, 60)
    # Reopening the same name later resumes after what was accepted.
    assert p.open(2, "orders", hint=0).resume_after == 60
    # ... and tells the new stream what is already done.
    ack = p.expect("ack")
    assert (ack.stream_id, ack.up_to) == (2, 60)
    e.terminate()
    p.expect("goodbye")
    assert e.wait() == 0, e.log()
    assert out_lines(tmp_path / "out.txt") == [b"O-%d" % i for i in range(11, 61)]
    assert e.summary()["source=in"]["duplicates"] == "6"


def test_accepted_source_over_its_credits_gets_no_credit_and_loses_the_batch(engine, tmp_path, token_env):
    port = free_port()
    e = engine(accepted_topology(tmp_path, port, "limits: {source_credits: 10}\n"))
    e.wait_for("READY")
    p = Peer("tcp://127.0.0.1:%d" % port, token_env)
    p.expect("welcome")
    p.open(1, "s")
    p.batch(1, [(1, i, b"x") for i in range(1, 12)])
    err = p.expect("error")
    assert err.code == pb.ERROR_CODE_NO_CREDIT
    assert "has 11 events but only 10 credits are left" in err.message
    e.wait_for(r"CONN-PROTO source in/0: batch 1 has 11 events but only 10 credits are left; "
               r"dropping the connection")
    p.close()
    # The next connection resumes where the engine is: nothing was accepted.
    p2 = Peer("tcp://127.0.0.1:%d" % port, token_env)
    p2.expect("welcome")
    assert p2.open(1, "s").resume_after == 0
    e.terminate()
    assert e.wait() == 0, e.log()
    assert e.summary()["source=in"]["events"] == "0"


@pytest.mark.parametrize("frame,message", [
    ("welcome", "welcome not allowed while open"),
    ("reply", "reply not allowed while open"),
])
def test_accepted_source_frame_not_allowed_gets_bad_frame(engine, tmp_path, token_env, frame, message):
    port = free_port()
    e = engine(accepted_topology(tmp_path, port))
    e.wait_for("READY")
    p = Peer("tcp://127.0.0.1:%d" % port, token_env)
    p.expect("welcome")
    f = pb.Frame()
    getattr(f, frame).SetInParent()
    p.send(f)
    err = p.expect("error")
    assert err.code == pb.ERROR_CODE_BAD_FRAME and err.message == message
    e.wait_for(r"CONN-PROTO source in/0: %s; dropping the connection" % message)
    e.terminate()
    assert e.wait() == 0


def test_accepted_source_with_a_wrong_token_is_refused(engine, tmp_path, token_env):
    port = free_port()
    e = engine(accepted_topology(tmp_path, port))
    e.wait_for("READY")
    p = Peer("tcp://127.0.0.1:%d" % port, "wrong")
    r = p.expect("refuse")
    assert r.code == pb.ERROR_CODE_BAD_TOKEN
    e.wait_for(r"CONN-REFUSED source in/0: wrong token in hello; dropping the connection")
    p.close()
    # The address keeps serving: the right token gets in.
    p2 = Peer("tcp://127.0.0.1:%d" % port, token_env)
    p2.expect("welcome")
    e.terminate()
    assert e.wait() == 0


def test_a_second_connection_cannot_open_a_stream_held_by_another(engine, tmp_path):
    e = engine(source_topology(tmp_path, WL_COUNT=0).replace(
        "feed:\n", "feed:\n").replace("instances: 1\n    env: {WL_COUNT", "instances: 2\n    env: {WL_COUNT"))
    e.wait_for(r"CONN-PROTO source in/\d pid \d+: stream 's0' is already open on connection \d "
               r"of this source: two writers would lose data")
    e.kill()


def test_token_env_not_set_is_a_configuration_error(engine, tmp_path, monkeypatch):
    monkeypatch.delenv("WL_TEST_TOKEN", raising=False)
    e = engine(accepted_topology(tmp_path, free_port()))
    assert e.wait() == 3
    e.wait_for(r"ENGINE-FATAL source 'in': the environment variable WL_TEST_TOKEN \(token_env\) "
               r"must hold the token its connector presents, 1 to 128 characters; it is not set")


# ---- Sink connectors

def sink_topology(tmp_path, lines=2000, **env):
    (tmp_path / "in.txt").write_bytes(b"".join(b"m-%d\n" % i for i in range(1, lines + 1)))
    env.setdefault("WL_STATE", str(tmp_path))
    env.setdefault("WL_OUT", str(tmp_path / "out.txt"))
    return ("application: csink\n"
            "limits: {batch_max_events: 64}\n"
            "programs:\n" + raw_program(instances=1) + conn_program("deliver", **env) +
            "sources:\n  in: {type: file, path: in.txt, framing: line}\n"
            "steps:\n  up: {kind: stateless, program: raw, function: upper, inputs: [in]}\n"
            "sinks:\n  out: {type: connector, program: deliver, inputs: [up]}\n")


def want_sink(lines):
    return [b"M-%d" % i for i in range(1, lines + 1)]


def test_sink_connector_receives_every_output_in_order(engine, tmp_path):
    e = engine(sink_topology(tmp_path))
    assert e.wait() == 0, e.log()
    assert out_lines(tmp_path / "out.txt") == want_sink(2000)
    s = e.summary()["sink=out"]
    assert (s["events"], s["resent"]) == ("2000", "0")


def test_sink_crash_before_its_reply_resends_the_batch_at_least_once(engine, tmp_path):
    e = engine(sink_topology(tmp_path, WL_FAULT="crash_before_reply:3"))
    assert e.wait() == 0, e.log()
    e.wait_for(r"SUP-CRASH sink out/0 pid \d+ exited with status 1")
    lines = out_lines(tmp_path / "out.txt")
    # Nothing lost; what the dead sink wrote without answering comes twice.
    assert set(lines) == set(want_sink(2000))
    dups = len(lines) - 2000
    assert 0 < dups <= 64 * 4
    assert int(e.summary()["sink=out"]["resent"]) >= dups


def test_sink_error_on_a_batch_reconnects_and_sends_it_again(engine, tmp_path):
    e = engine(sink_topology(tmp_path, WL_FAULT="error:2"))
    assert e.wait() == 0, e.log()
    e.wait_for(r"CONN-DELIVERY sink out/0 pid \d+: could not deliver batch \d+ "
               r"\(upstream refused the batch\)")
    lines = out_lines(tmp_path / "out.txt")
    assert set(lines) == set(want_sink(2000))


@pytest.mark.parametrize("fault", ["none", "crash_after_prepare", "crash_after_commit",
                                   "crash_before_reply:5"])
def test_two_phase_sink_gets_each_output_exactly_once(engine, tmp_path, fault):
    e = engine(sink_topology(tmp_path, lines=3000, WL_2PC="1", WL_FAULT=fault))
    assert e.wait() == 0, e.log()
    assert out_lines(tmp_path / "out.txt") == want_sink(3000)
    assert not [n for n in os.listdir(tmp_path) if n.startswith("prepared-")]
    if fault != "none":
        e.wait_for(r"SUP-CRASH sink out/0")


@pytest.mark.parametrize("seed", range(1, 4))
def test_a_source_sending_damaged_frames_never_takes_the_engine_down(engine, tmp_path, seed):
    """Some of the source's batches arrive damaged at random (rawrunner's
    seeded mutation). The engine drops the connection of each one it
    cannot use, naming the source, starts the connector again and finishes
    the run. A damaged frame can still be a valid one that says something
    else (another message id), so the outputs are not checked here."""
    e = engine(source_topology(tmp_path, WL_COUNT=1000, WL_STREAMS=2, WL_BATCH=25,
                               WL_FAULT="mutate", WL_MUTATE_SEED=seed, WL_MUTATE_P=0.1,
                               WL_MUTATE_ONLY="batch"))
    assert e.wait(120) == 0, e.log()
    assert e.count(r"CONN-(GARBAGE|PROTO) source in/0 pid \d+: ") >= 1, e.log()
    e.wait_for(r"SUP-RESTART source in/0 restarts")


@pytest.mark.parametrize("seed", range(1, 4))
def test_a_sink_sending_damaged_answers_gets_every_output_at_least_once(engine, tmp_path, seed):
    """The sink writes every batch, then some of its answers arrive damaged.
    The engine drops the connection on each one it cannot use, naming the
    sink, and sends again what was not answered: nothing is lost."""
    e = engine(sink_topology(tmp_path, lines=3000, WL_FAULT="mutate", WL_MUTATE_SEED=seed,
                             WL_MUTATE_P=0.2))
    assert e.wait(120) == 0, e.log()
    assert e.count(r"CONN-(GARBAGE|PROTO) sink out/0 pid \d+: ") >= 1, e.log()
    assert set(out_lines(tmp_path / "out.txt")) >= set(want_sink(3000))


def test_a_source_that_crashes_after_doing_work_restarts_without_a_growing_backoff(
        engine, tmp_path):
    """Every incarnation crashes after 500 events; each got batches accepted,
    so each crash counts as the first in a row (100 ms), not the sixth."""
    e = engine(source_topology(tmp_path, WL_COUNT=3000, WL_FAULT="crash:500",
                               WL_FAULT_MARKER="always"))
    assert e.wait(60) == 0, e.log()
    assert e.count(r"SUP-RESTART source in/0 restarts in 100 ms \(failure 1 in a row\)") >= 3, \
        e.log()
    check_exactly_once(tmp_path / "out.txt", 1, 3000)
