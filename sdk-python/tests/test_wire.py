"""_wire writes exactly the bytes protobuf writes for the same reply."""

import random

import pytest

import wallaroo
from wallaroo import Output, _wire
from wallaroo._core import encode_reply, process_batch
from wallaroo._pb import wallaroo_pb2 as pb


def random_bytes(rng, longest):
    n = rng.choice([0, 1, rng.randrange(longest + 1), 127, 128, 16383, 16384])
    return bytes(rng.getrandbits(8) for _ in range(min(n, longest)))


def random_reply(rng):
    """A reply built both ways: through protobuf and through _wire."""
    ref = pb.Frame()
    reply = ref.reply
    batch_id = rng.choice([0, 1, 127, 128, rng.getrandbits(64)])
    reply.batch_id = batch_id
    fields = []
    for _ in range(rng.randrange(6)):
        res = reply.results.add()
        kind = rng.randrange(5)
        if kind == 0:
            fields.append(_wire.EMPTY_RESULT)
        elif kind == 1:
            payload = random_bytes(rng, 20000)
            res.outputs.add().payload = payload
            fields.append(_wire.plain_result(payload))
        elif kind == 2:
            outs = []
            for _ in range(rng.randrange(4)):
                payload = random_bytes(rng, 300)
                key = rng.choice([None, b"", random_bytes(rng, 40)])
                time = rng.choice([0, 1, -1, 1 << 62, -(1 << 63), (1 << 63) - 1])
                o = res.outputs.add()
                o.payload = payload
                if key is not None:
                    o.key = key
                    o.has_key = True
                o.event_time = time
                outs.append(_wire.output(payload, key, time))
            if outs:
                fields.append(_wire.outputs_result(outs))
            else:
                fields.append(_wire.EMPTY_RESULT)
        elif kind == 3:
            key = random_bytes(rng, 200)
            res.key = key
            fields.append(_wire.key_result(key))
        else:
            message = rng.choice(["x", "é" * rng.randrange(100), "boom " * 40])
            res.error = message
            fields.append(_wire.error_result(message))
    for _ in range(rng.randrange(4)):
        key, value = random_bytes(rng, 30), random_bytes(rng, 500)
        reply.states.add(key=key, value=value, present=True)
        fields.append(_wire.state_entry(key, value))
    return ref, _wire.reply_frame(batch_id, fields)


def test_random_replies_are_byte_for_byte_what_protobuf_writes():
    rng = random.Random(6)
    for _ in range(1500):
        ref, ours = random_reply(rng)
        assert ours == ref.SerializeToString()


@pytest.mark.parametrize("n", [0, 1, 127, 128, 16383, 16384, 2**21, 2**63, 2**64 - 1])
def test_varint_matches_protobuf(n):
    expected = pb.BatchReply(batch_id=n).SerializeToString()  # empty for 0
    assert (b"\x08" + _wire.varint(n) if n else b"") == expected
    assert pb.Event.FromString(b"\x28" + _wire.varint(n)).message_id == n


def test_plain_prefix_cache_stays_bounded():
    for n in range(0, 40000, 7):
        _wire.plain_result(b"x" * n)
    assert all(n < _wire._PLAIN_PREFIX_MAX_LEN for n in _wire._PLAIN_PREFIX)


def test_an_error_that_is_not_utf8_is_escaped_not_refused():
    step = wallaroo.Steps()

    class Weird(Exception):
        def __str__(self):
            return "bad \udcff here"

    def fail(data):
        raise Weird()

    step.computation("w", fail)
    reply = process_batch(step.get("w"), pb.Batch(batch_id=1, events=[pb.Event(key=b"k")]))
    assert reply.results[0].error == "step 'w' key b'k': Weird: bad \\udcff here"


def test_an_event_time_outside_int64_fails_that_event_only():
    steps = wallaroo.Steps()
    steps.computation("t", lambda d: Output(d, event_time=int(d)))
    batch = pb.Batch(batch_id=3)
    for d in (b"5", str(1 << 63).encode(), b"-7"):
        batch.events.add(key=b"k", payload=d)
    reply = process_batch(steps.get("t"), batch)
    assert reply.results[0].outputs[0].event_time == 5
    assert "ValueError: event_time 9223372036854775808 is outside int64" in reply.results[1].error
    assert not reply.results[1].outputs
    assert reply.results[2].outputs[0].event_time == -7


def test_an_output_with_an_empty_key_is_unkeyed_not_inherited():
    steps = wallaroo.Steps()
    steps.computation("t", lambda d: Output(d, key=b""))
    reply = process_batch(steps.get("t"), pb.Batch(events=[pb.Event(key=b"k", payload=b"p")]))
    out = reply.results[0].outputs[0]
    assert out.has_key and out.key == b"" and out.payload == b"p"


def test_a_state_codec_returning_text_fails_that_key_events_only():
    class TextCodec:
        def dumps(self, state):
            return "n=%d" % state["n"] if state["n"] != 2 else b"two"

        def loads(self, data):
            return {"n": 0}

    def bump(data, state):
        state["n"] += 1
        return data

    steps = wallaroo.Steps()
    steps.state_computation("s", bump, state=lambda: {"n": 0}, state_codec=TextCodec())
    batch = pb.Batch(batch_id=9)
    for key in (b"a", b"b", b"b"):
        batch.events.add(key=key, payload=key)
    reply = process_batch(steps.get("s"), batch)
    assert "(saving the state)" in reply.results[0].error
    assert [o.payload for o in reply.results[1].outputs] == [b"b"]
    assert [(e.key, e.value) for e in reply.states] == [(b"b", b"two")]


def test_encode_reply_is_the_frame_the_runner_sends():
    steps = wallaroo.Steps()
    steps.computation("up", bytes.upper)
    batch = pb.Batch(batch_id=12, events=[pb.Event(key=b"k", payload=b"ab")])
    frame = pb.Frame.FromString(encode_reply(steps.get("up"), batch))
    assert frame.WhichOneof("body") == "reply"
    assert frame.reply.batch_id == 12
    assert frame.reply.results[0].outputs[0].payload == b"AB"


@pytest.mark.parametrize(
    "key_len,value_len",
    [(0, 0), (0, 5), (5, 0), (1, 1), (4, 117), (4, 118), (60, 61), (61, 61), (1, 200)],
)
def test_state_entries_either_side_of_the_one_byte_length_match_protobuf(key_len, value_len):
    # key + value of 121 bytes is the longest body (with 6 bytes of tags,
    # lengths and the present flag) whose length fits one varint byte.
    key, value = b"k" * key_len, b"v" * value_len
    ref = pb.BatchReply()
    ref.states.add(key=key, value=value, present=True)
    assert _wire.state_entry(key, value) == ref.SerializeToString()
