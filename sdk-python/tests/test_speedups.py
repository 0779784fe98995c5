"""The C path (_speedups.c) writes exactly the reply the Python path writes,
and declines (None) only what it is documented to leave to Python."""

import random
import struct

import pytest

import wallaroo
from wallaroo import Output, PickleCodec
from wallaroo._core import encode_reply, plan
from wallaroo._pb import wallaroo_pb2 as pb
from google.protobuf.message import DecodeError

try:
    from wallaroo import _speedups
except ImportError:  # reported by the first test, not skipped
    _speedups = None

from wallaroo import _core

STEP_ID = 7


def test_the_c_part_is_built_and_in_use():
    # scripts/setup builds it (python3-dev, build-essential); a checkout
    # without it runs the slower pure-Python path, which is not what ships.
    assert _speedups is not None, "wallaroo._speedups is not built: run scripts/setup"
    assert _core.fast_reply is _speedups.reply


def fast(step, data):
    return _speedups.reply(data, {STEP_ID: plan(step)})


def python_reply(step, data):
    frame = pb.Frame()
    frame.ParseFromString(data)
    return encode_reply(step, frame.batch)


class Boom(Exception):
    pass


class Flaky:
    """User code that fails on payloads starting with b'!', and records
    whether it did (a state step's batch is then left to Python)."""

    def __init__(self):
        self.failed = False

    def check(self, data):
        if data[:1] == b"!":
            self.failed = True
            raise Boom(f"bad payload {data[:8]!r}")


def stateless_steps(flaky):
    """One step of every stateless shape, with failures."""
    steps = wallaroo.Steps()

    def up(data):
        flaky.check(data)
        if data[:1] == b"n":
            return None
        if data[:1] == b"o":
            return Output(data.upper(), key=data[:3], event_time=len(data))
        if data[:1] == b"s":
            return "a str the default encoder refuses"
        return data.upper()

    def fan(data):
        flaky.check(data)
        if data[:1] == b"g":
            return (bytes([c]) for c in data[:3])
        if data[:1] == b"o":
            return [Output(data, key=b""), data, Output(data, event_time=5)]
        return [data] * (len(data) % 3)

    def enc(value):
        if value[:1] == b"b":
            return bytearray(value)  # not bytes exactly: the helper's branch
        if value[:1] == b"e":
            raise Boom("encoder says no")
        return b"<" + value + b">"

    def key_of(data):
        flaky.check(data)
        if data[:1] == b"s":
            return data.decode("latin-1")
        if data[:1] == b"i":
            return 42  # not a key: a per-event error
        if data[:1] == b"m":
            return memoryview(data)
        return data[:2]

    steps.computation("up", up)
    steps.computation("enc", lambda d: (flaky.check(d), d)[1], encoder=enc)
    steps.computation("dec", lambda d: d, decoder=lambda p: (flaky.check(p), p[::-1])[1])
    steps.computation_multi("fan", fan)
    steps.computation_multi("fan-enc", fan, encoder=enc)
    steps.key_by("key", key_of)
    return [steps.get(n) for n in steps.names()]


class Tally:
    __slots__ = ("n", "seen")

    def __init__(self):
        self.n = 0
        self.seen = b""


class TallyCodec:
    def dumps(self, t):
        return struct.pack(">I", t.n) + t.seen

    def loads(self, data):
        t = Tally()
        t.n = struct.unpack(">I", data[:4])[0]
        t.seen = data[4:]
        return t


def state_steps(flaky):
    steps = wallaroo.Steps()

    def count(data, state):
        flaky.check(data)
        if data[:1] == b"r":
            return None  # reads only: the state's bytes do not change
        state.n += 1
        state.seen = (state.seen + data[:1])[-8:]
        if data[:1] == b"o":
            return Output(data, key=b"elsewhere")
        return b"%d" % state.n

    def count_multi(data, state):
        flaky.check(data)
        state.n += 1
        return [data, b"%d" % state.n] if state.n % 2 else []

    def total(data, state):
        flaky.check(data)
        state["n"] = state.get("n", 0) + len(data)
        return None

    steps.state_computation("count", count, state=Tally, state_codec=TallyCodec())
    steps.state_computation("count-dec", count, state=Tally, state_codec=TallyCodec(),
                            decoder=lambda p: p + b"!" if p[:1] == b"d" else p)
    steps.state_computation_multi("count-multi", count_multi, state=Tally,
                                  state_codec=TallyCodec())
    steps.state_computation("total", total, state=dict, state_codec=PickleCodec())
    return [steps.get(n) for n in steps.names()]


PAYLOAD_STARTS = b"xxxxnosgobemir"


def random_payload(rng, fail_rate):
    if rng.random() < fail_rate:
        start = b"!"
    else:
        start = bytes([rng.choice(PAYLOAD_STARTS)])
    n = rng.choice([0, 1, 5, 40, 130, rng.randrange(300), 20000])
    return (start + rng.randbytes(n))[: max(n, 1)]


def random_batch(rng, step, fail_rate):
    frame = pb.Frame()
    batch = frame.batch
    batch.batch_id = rng.choice([0, 1, 127, 128, rng.getrandbits(64)])
    batch.step_id = STEP_ID
    batch.epoch = rng.choice([0, 3])
    keys = [b"", b"a", b"key-%d" % rng.randrange(5), rng.randbytes(130)]
    used = []
    for _ in range(rng.choice([0, 1, 3, 10, 40])):
        key = rng.choice(keys)
        used.append(key)
        batch.events.add(key=key, payload=random_payload(rng, fail_rate),
                         event_time=rng.choice([0, 1700000000000000]),
                         stream_id=rng.randrange(3), message_id=rng.getrandbits(40))
    if step.state is not None:
        codec = step.state_codec
        for key in dict.fromkeys(used):
            entry = batch.states.add(key=key)
            if rng.random() < 0.6:
                state = step.state()
                if isinstance(state, Tally):
                    state.n = rng.randrange(1000)
                else:
                    state["n"] = rng.randrange(1000)
                entry.value = codec.dumps(state)
                entry.present = True
    return frame.SerializeToString()


@pytest.mark.parametrize("fail_rate", [0.0, 0.05, 0.5])
def test_stateless_and_key_by_replies_match_the_python_path(fail_rate):
    rng = random.Random(11)
    flaky = Flaky()
    for step in stateless_steps(flaky):
        for _ in range(150):
            data = random_batch(rng, step, fail_rate)
            got = fast(step, data)
            # Per-event failures are written here, never left to Python.
            assert got is not None, step.name
            assert got == python_reply(step, data), step.name


@pytest.mark.parametrize("fail_rate", [0.0, 0.05, 0.5])
def test_state_replies_match_and_only_failed_batches_are_declined(fail_rate):
    rng = random.Random(12)
    flaky = Flaky()
    declined = handled = 0
    for step in state_steps(flaky):
        for _ in range(150):
            data = random_batch(rng, step, fail_rate)
            flaky.failed = False
            got = fast(step, data)
            if got is None:
                assert flaky.failed, f"{step.name}: declined a batch without a failure"
                declined += 1
                continue
            assert not flaky.failed
            handled += 1
            assert got == python_reply(step, data), step.name
    assert handled > 0
    if fail_rate:
        assert declined > 0


def test_a_state_that_dumps_to_a_bytearray_is_left_to_python():
    class ArrayCodec(TallyCodec):
        def dumps(self, t):
            return bytearray(super().dumps(t))

    steps = wallaroo.Steps()
    steps.state_computation("c", lambda d, s: None, state=Tally, state_codec=ArrayCodec())
    step = steps.get("c")
    data = pb.Frame(batch=pb.Batch(step_id=STEP_ID, events=[pb.Event(key=b"k")])).SerializeToString()
    assert fast(step, data) is None
    assert python_reply(step, data)  # and Python answers it


def frame_of(**body):
    return pb.Frame(**body).SerializeToString()


def test_frames_other_than_one_batch_are_declined():
    step = stateless_steps(Flaky())[0]
    batch = pb.Batch(step_id=STEP_ID, events=[pb.Event(payload=b"x")])
    one = frame_of(batch=batch)
    assert fast(step, one) is not None
    for data in [
        b"",
        frame_of(heartbeat=pb.Heartbeat(seq=3, reply=True)),
        frame_of(goodbye=pb.Goodbye(reason="bye")),
        frame_of(batch=pb.Batch(step_id=STEP_ID + 1, events=[pb.Event(payload=b"x")])),
        one + one,  # two Batch fields: protobuf would merge them
        one + b"\x48\x01",  # a Batch, then another field of the Frame
    ]:
        assert fast(step, data) is None, data


def test_unknown_fields_are_skipped_as_protobuf_does():
    step = stateless_steps(Flaky())[0]
    event = pb.Event(key=b"k", payload=b"abc").SerializeToString()
    # Unknown fields of every wire type in the Event and the Batch.
    extra = b"\xa0\x06\x05" + b"\xa9\x06" + b"8" * 8 + b"\xb2\x06\x02hi" + b"\xbd\x06" + b"4" * 4
    event += extra
    batch = b"\x10" + bytes([STEP_ID]) + b"\x1a" + bytes([len(event)]) + event + extra
    data = b"\x32" + bytes([len(batch)]) + batch
    got = fast(step, data)
    assert got is not None
    assert got == python_reply(step, data)


def test_mutated_frames_never_give_a_reply_protobuf_would_not():
    rng = random.Random(13)
    flaky = Flaky()
    steps = stateless_steps(flaky) + state_steps(flaky)
    answered = 0
    for i in range(4000):
        step = steps[i % len(steps)]
        data = bytearray(random_batch(rng, step, 0.0))
        for _ in range(rng.randrange(1, 4)):
            how = rng.randrange(3)
            pos = rng.randrange(len(data) + 1)
            if how == 0 and data:
                data[min(pos, len(data) - 1)] = rng.getrandbits(8)
            elif how == 1:
                del data[pos:pos + rng.randrange(1, 4)]
            else:
                data[pos:pos] = rng.randbytes(rng.randrange(1, 4))
        answered += agrees(step, bytes(data))
    assert answered > 100  # the mutations left many frames valid


def agrees(step, data):
    """Checks that the C path either declines ``data`` or answers it as the
    Python path does (and that protobuf reads it as a Batch); True when it
    answered."""
    got = fast(step, data)
    if got is None:
        return False
    frame = pb.Frame()
    try:
        frame.ParseFromString(data)
    except DecodeError:
        pytest.fail(f"answered a frame protobuf refuses: {data!r}")
    assert frame.WhichOneof("body") == "batch"
    assert got == encode_reply(step, frame.batch)
    return True


@pytest.mark.parametrize("last", [b"\x01", b"\x02", b"\x7f", b"\x80\x01", b""])
def test_ten_byte_varints_are_read_as_protobuf_reads_them_or_declined(last):
    step = stateless_steps(Flaky())[0]
    batch = b"\x10" + bytes([STEP_ID]) + b"\x08" + b"\xff" * 9 + last
    data = b"\x32" + bytes([len(batch)]) + batch
    answered = agrees(step, data)
    assert answered == (last == b"\x01")  # the one a uint64 holds exactly


def test_an_exception_that_is_not_an_exception_propagates():
    steps = wallaroo.Steps()

    def stop(data):
        raise KeyboardInterrupt

    steps.computation("stop", stop)
    steps.state_computation("stop-state", lambda d, s: stop(d), state=dict)
    data = frame_of(batch=pb.Batch(step_id=STEP_ID, events=[pb.Event(payload=b"x")]))
    for name in ("stop", "stop-state"):
        with pytest.raises(KeyboardInterrupt):
            fast(steps.get(name), data)


def test_the_error_text_is_the_python_paths():
    steps = wallaroo.Steps()

    def fail(data):
        raise ValueError("é" * 3000)

    steps.computation("fail", fail)
    step = steps.get("fail")
    data = frame_of(batch=pb.Batch(step_id=STEP_ID, events=[pb.Event(key=b"\xff", payload=b"x")]))
    got = pb.Frame.FromString(fast(step, data)).reply
    assert got.results[0].error.startswith("step 'fail' key b'\\xff': ValueError: ééé")
    assert got.results[0].error.endswith("...")
