"""wallaroo.run against a fake engine: a real pynng Pair1 listener on an
ipc:// address, and the runner as a real subprocess with the WALLAROO_* env.

Nothing here sleeps: every wait is a receive timeout or a process wait with a
deadline.
"""

import os
import shutil
import subprocess
import sys
import tempfile

import pynng
import pytest

from wallaroo._pb import wallaroo_pb2 as pb

SDK_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEADLINE = 10.0  # seconds; generous, only reached when something is broken

RUNNER = r"""
import os
import wallaroo


class Total:
    def __init__(self):
        self.n = 0


def count(data, total):
    total.n += int(data)
    return str(total.n)


def picky(data):
    if data == b"x":
        raise ValueError("no x here")
    return data


def main():
    steps = wallaroo.Steps()
    steps.computation("upper", bytes.upper)
    steps.computation("picky", picky)
    steps.key_by("first-letter", lambda data: data[:1])
    steps.state_computation("count", count, state=Total)
    wallaroo.run(
        steps,
        connect_timeout=float(os.environ.get("TEST_CONNECT_TIMEOUT", "10")),
        orphan_timeout=float(os.environ.get("TEST_ORPHAN_TIMEOUT", "5")),
    )


main()
"""


class FakeEngine:
    """The engine side of one runner session, driven step by step."""

    def __init__(self, directory):
        self.addr = f"ipc://{directory}/engine.sock"
        self.sock = pynng.Pair1(recv_timeout=int(DEADLINE * 1000), send_timeout=int(DEADLINE * 1000))
        self.sock.listen(self.addr)
        self.proc = None

    def spawn(self, env=None, program="prog", instance="3", code=RUNNER):
        full_env = dict(os.environ)
        full_env["PYTHONPATH"] = SDK_ROOT + os.pathsep + full_env.get("PYTHONPATH", "")
        full_env.update(
            {
                "WALLAROO_ENGINE_ADDR": self.addr,
                "WALLAROO_TOKEN": "c0ffee",
                "WALLAROO_PROGRAM": program,
                "WALLAROO_INSTANCE": instance,
            }
        )
        for key, value in (env or {}).items():
            if value is None:
                full_env.pop(key, None)
            else:
                full_env[key] = value
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code],
            env=full_env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        return self.proc

    def send(self, **body):
        (name, message), = body.items()
        frame = pb.Frame()
        getattr(frame, name).CopyFrom(message)
        self.sock.send(frame.SerializeToString())

    def recv(self):
        return pb.Frame.FromString(self.sock.recv())

    def expect(self, body):
        frame = self.recv()
        assert frame.WhichOneof("body") == body, frame
        return getattr(frame, body)

    def handshake(self, specs, welcome=None):
        """Hello -> Welcome -> AssignSteps -> Ready; returns the Hello."""
        hello = self.expect("hello")
        self.send(welcome=welcome or pb.Welcome(version_major=1, version_minor=0, worker="w0",
                                                max_message_bytes=1 << 20))
        self.send(assign=pb.AssignSteps(steps=specs))
        self.expect("ready")
        return hello

    def finish(self):
        """Wait for the runner to exit; returns (status, stderr lines)."""
        _, err = self.proc.communicate(timeout=DEADLINE)
        return self.proc.returncode, err.splitlines()

    def close(self):
        self.sock.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


@pytest.fixture
def engine():
    # A short directory: ipc:// paths are limited to ~100 bytes.
    directory = tempfile.mkdtemp(prefix="wl-")
    eng = FakeEngine(directory)
    yield eng
    eng.close()
    shutil.rmtree(directory, ignore_errors=True)


def spec(step_id, name, kind, function=""):
    return pb.StepSpec(step_id=step_id, name=name, function=function, kind=kind)


STEPS = [
    spec(1, "shout", pb.STEP_KIND_STATELESS, function="upper"),
    spec(2, "totals", pb.STEP_KIND_STATE, function="count"),
    spec(3, "first-letter", pb.STEP_KIND_KEY_BY),
    spec(4, "picky", pb.STEP_KIND_STATELESS),
]


def batch(batch_id, step_id, events, states=()):
    b = pb.Batch(batch_id=batch_id, step_id=step_id)
    for key, payload in events:
        b.events.add(key=key, payload=payload)
    for key, value in states:
        entry = b.states.add(key=key)
        if value is not None:
            entry.value, entry.present = value, True
    return b


def test_hello_carries_identity_token_and_capabilities(engine):
    proc = engine.spawn()
    hello = engine.handshake(STEPS)
    assert (hello.version_major, hello.version_minor) == (1, 0)
    assert hello.role == pb.ROLE_RUNNER
    assert (hello.program, hello.token, hello.instance) == ("prog", "c0ffee", 3)
    assert hello.pid == proc.pid
    assert list(hello.capabilities) == [
        "sdk:python/0.1",
        "steps:upper,picky,first-letter,count",
    ]
    engine.send(goodbye=pb.Goodbye(reason="test over"))
    status, _ = engine.finish()
    assert status == 0


def test_batches_and_heartbeats_are_answered_in_arrival_order(engine):
    engine.spawn()
    engine.handshake(STEPS)
    engine.send(batch=batch(10, 1, [(b"k", b"abc"), (b"", b"d")]))
    engine.send(batch=batch(11, 2, [(b"a", b"2"), (b"b", b"1"), (b"a", b"3")],
                            states=[(b"a", None), (b"b", None)]))
    engine.send(heartbeat=pb.Heartbeat(seq=9, reply=True))
    engine.send(batch=batch(12, 3, [(b"", b"zebra")]))

    r10 = engine.expect("reply")
    assert r10.batch_id == 10
    assert [[o.payload for o in r.outputs] for r in r10.results] == [[b"ABC"], [b"D"]]
    assert not any(o.has_key for r in r10.results for o in r.outputs)

    r11 = engine.expect("reply")
    assert r11.batch_id == 11
    assert [r.outputs[0].payload for r in r11.results] == [b"2", b"1", b"5"]
    assert [e.key for e in r11.states] == [b"a", b"b"]
    assert all(e.present for e in r11.states)

    hb = engine.expect("heartbeat")
    assert (hb.seq, hb.reply) == (9, False)

    r12 = engine.expect("reply")
    assert r12.batch_id == 12 and r12.results[0].key == b"z"

    # State sent back by the runner is what the engine sends next time.
    engine.send(batch=batch(13, 2, [(b"a", b"10")], states=[(b"a", r11.states[0].value)]))
    r13 = engine.expect("reply")
    assert r13.results[0].outputs[0].payload == b"15"

    engine.send(goodbye=pb.Goodbye(reason="done"))
    status, lines = engine.finish()
    assert status == 0
    assert lines and all(line.startswith("wallaroo-sdk[prog/3]: ") for line in lines)
    assert any("said goodbye (done)" in line for line in lines)


def test_user_error_fails_one_event_and_the_runner_stays_up(engine):
    engine.spawn()
    engine.handshake(STEPS)
    engine.send(batch=batch(1, 4, [(b"k1", b"a"), (b"k2", b"x"), (b"k3", b"b")]))
    reply = engine.expect("reply")
    assert [r.error for r in reply.results] == [
        "",
        "step 'picky' key b'k2': ValueError: no x here",
        "",
    ]
    assert [len(r.outputs) for r in reply.results] == [1, 0, 1]
    engine.send(heartbeat=pb.Heartbeat(seq=1, reply=True))
    assert engine.expect("heartbeat").seq == 1
    engine.send(goodbye=pb.Goodbye())
    assert engine.finish()[0] == 0


def test_unknown_step_sends_error_naming_it_and_exits_1(engine):
    engine.spawn()
    engine.expect("hello")
    engine.send(welcome=pb.Welcome(version_major=1))
    engine.send(assign=pb.AssignSteps(steps=[
        spec(1, "shout", pb.STEP_KIND_STATELESS, function="upper"),
        spec(2, "mystery", pb.STEP_KIND_STATELESS, function="no-such-fn"),
    ]))
    error = engine.expect("error")
    assert error.code == pb.ERROR_CODE_UNKNOWN_STEP
    assert "'no-such-fn'" in error.message and "'mystery'" in error.message
    assert "registered: 'upper', 'picky', 'first-letter', 'count'" in error.message
    engine.sock.close()  # as the engine would; the runner waits for it briefly
    status, lines = engine.finish()
    assert status == 1
    assert any("no-such-fn" in line for line in lines)


def test_step_assigned_with_another_kind_is_refused(engine):
    engine.spawn()
    engine.expect("hello")
    engine.send(welcome=pb.Welcome(version_major=1))
    engine.send(assign=pb.AssignSteps(steps=[spec(1, "count", pb.STEP_KIND_STATELESS)]))
    error = engine.expect("error")
    assert error.code == pb.ERROR_CODE_UNKNOWN_STEP
    assert "registered as a state_computation" in error.message
    assert "STEP_KIND_STATELESS" in error.message
    engine.sock.close()
    assert engine.finish()[0] == 1


def test_refuse_prints_the_reason_and_exits_2(engine):
    engine.spawn()
    engine.expect("hello")
    engine.send(refuse=pb.Refuse(code=pb.ERROR_CODE_BAD_TOKEN, message="token does not match"))
    status, lines = engine.finish()
    assert status == 2
    assert any("ERROR_CODE_BAD_TOKEN: token does not match" in line for line in lines)


def test_other_major_version_is_refused_with_bad_version_and_exit_2(engine):
    engine.spawn()
    engine.expect("hello")
    engine.send(welcome=pb.Welcome(version_major=2, version_minor=0))
    refuse = engine.expect("refuse")
    assert refuse.code == pb.ERROR_CODE_BAD_VERSION
    assert "2.0 is not supported" in refuse.message
    engine.sock.close()
    assert engine.finish()[0] == 2


def test_undecodable_or_unexpected_frames_get_bad_frame_and_the_runner_goes_on(engine):
    engine.spawn()
    engine.expect("hello")
    # A batch before the handshake is over is not allowed.
    engine.send(batch=batch(1, 1, [(b"k", b"a")]))
    error = engine.expect("error")
    assert error.code == pb.ERROR_CODE_BAD_FRAME
    assert "unexpected batch frame while waiting for Welcome" in error.message
    engine.send(welcome=pb.Welcome(version_major=1))
    engine.send(assign=pb.AssignSteps(steps=STEPS))
    engine.expect("ready")
    # Field 1 as a varint where a message is expected: not a Frame.
    engine.sock.send(b"\x08\x01\x0a\xff")
    error = engine.expect("error")
    assert error.code == pb.ERROR_CODE_BAD_FRAME
    assert "undecodable frame of 4 bytes" in error.message
    # An empty Frame (no body): nothing to do with it.
    engine.sock.send(b"")
    assert engine.expect("error").code == pb.ERROR_CODE_BAD_FRAME
    engine.send(batch=batch(2, 1, [(b"k", b"still here")]))
    assert engine.expect("reply").results[0].outputs[0].payload == b"STILL HERE"
    engine.send(goodbye=pb.Goodbye())
    assert engine.finish()[0] == 0


def test_batch_for_an_unassigned_step_id_gets_unknown_step_with_the_batch_id(engine):
    engine.spawn()
    engine.handshake(STEPS)
    engine.send(batch=batch(42, 99, [(b"k", b"a")]))
    error = engine.expect("error")
    assert (error.code, error.batch_id) == (pb.ERROR_CODE_UNKNOWN_STEP, 42)
    engine.send(goodbye=pb.Goodbye())
    assert engine.finish()[0] == 0


def test_reply_limit_counts_the_four_byte_pair1_header(engine):
    # nng counts its 4-byte pair1 header against the receiver's limit, so a
    # reply of exactly limit - 4 bytes is the largest the engine accepts.
    limit = 400
    engine.spawn()
    engine.handshake(STEPS, welcome=pb.Welcome(version_major=1, max_message_bytes=limit))
    engine.send(batch=batch(1, 1, [(b"k", b"y" * 200)]))
    frame = engine.sock.recv()
    n = 200 + (limit - 4) - len(frame)  # reply size grows one byte per payload byte here
    engine.send(batch=batch(2, 1, [(b"k", b"y" * n)]))
    frame = engine.sock.recv()
    assert len(frame) == limit - 4 and pb.Frame.FromString(frame).WhichOneof("body") == "reply"
    engine.send(batch=batch(3, 1, [(b"k", b"y" * (n + 1))]))
    error = engine.expect("error")
    assert (error.code, error.batch_id) == (pb.ERROR_CODE_TOO_LARGE, 3)
    assert f"over the limit of {limit - 4}" in error.message
    engine.send(goodbye=pb.Goodbye())
    assert engine.finish()[0] == 0


def test_reply_over_the_welcome_limit_is_replaced_by_too_large(engine):
    engine.spawn()
    engine.handshake(STEPS, welcome=pb.Welcome(version_major=1, max_message_bytes=200))
    engine.send(batch=batch(5, 1, [(b"k", b"y" * 300)]))
    error = engine.expect("error")
    assert (error.code, error.batch_id) == (pb.ERROR_CODE_TOO_LARGE, 5)
    engine.send(batch=batch(6, 1, [(b"k", b"small")]))
    assert engine.expect("reply").batch_id == 6
    engine.send(goodbye=pb.Goodbye())
    assert engine.finish()[0] == 0


def test_frame_over_wallaroo_max_message_bytes_is_not_accepted(engine):
    engine.spawn(env={"WALLAROO_MAX_MESSAGE_BYTES": "4096", "TEST_ORPHAN_TIMEOUT": "0.2"})
    engine.handshake(STEPS)
    engine.send(batch=batch(1, 1, [(b"k", b"small")]))
    assert engine.expect("reply").batch_id == 1
    # nng drops a message over recv_max_size and closes the connection; the
    # runner then finds itself without an engine and leaves.
    engine.send(batch=batch(2, 1, [(b"k", b"z" * 8192)]))
    status, lines = engine.finish()
    assert status == 0
    assert any("the engine has been gone" in line for line in lines)


def test_runner_exits_0_when_the_engine_goes_away(engine):
    engine.spawn(env={"TEST_ORPHAN_TIMEOUT": "0.2"})
    engine.handshake(STEPS)
    engine.sock.close()
    status, lines = engine.finish()
    assert status == 0
    assert any("the engine has been gone for 0.2 s" in line for line in lines)


def test_runner_gives_up_when_no_engine_listens(engine):
    engine.sock.close()
    engine.spawn(env={"TEST_CONNECT_TIMEOUT": "0.3"})
    status, lines = engine.finish()
    assert status == 1
    assert any("could not connect to the engine at ipc://" in line for line in lines)


@pytest.mark.parametrize(
    "missing",
    [["WALLAROO_ENGINE_ADDR"], ["WALLAROO_TOKEN", "WALLAROO_INSTANCE"]],
)
def test_missing_environment_variables_are_named_and_exit_2(engine, missing):
    engine.spawn(env={name: None for name in missing})
    status, lines = engine.finish()
    assert status == 2
    assert len(lines) == 1
    assert "missing environment variable" in lines[0]
    for name in missing:
        assert name in lines[0]


def test_invalid_numbers_in_the_environment_exit_2(engine):
    engine.spawn(env={"WALLAROO_INSTANCE": "first", "WALLAROO_MAX_MESSAGE_BYTES": "0"})
    status, lines = engine.finish()
    assert status == 2
    assert "WALLAROO_INSTANCE='first' is not an integer >= 0" in lines[0]
    assert "WALLAROO_MAX_MESSAGE_BYTES='0' is not an integer >= 1" in lines[0]


def test_an_address_nng_cannot_dial_exits_2(engine):
    engine.spawn(env={"WALLAROO_ENGINE_ADDR": "nosuchscheme://x"})
    status, lines = engine.finish()
    assert status == 2
    assert "WALLAROO_ENGINE_ADDR='nosuchscheme://x' cannot be dialed" in lines[0]
