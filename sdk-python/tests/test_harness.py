"""Each step kind through wallaroo.testing.Harness."""

import struct

import pytest

import wallaroo
from wallaroo import JsonCodec, Output
from wallaroo.testing import Emitted, Harness, StepFailed


class WordTotal:
    def __init__(self):
        self.count = 0


def split(data: str):
    return data.split()


def key_word(word: bytes) -> bytes:
    return word


def count(word: bytes, total: WordTotal):
    total.count += 1
    return f"{word.decode()}={total.count}"


def decode_float(data: bytes) -> float:
    return struct.unpack(">d", data)[0]


def encode_float(value: float) -> bytes:
    return struct.pack(">d", value)


def build_steps() -> wallaroo.Steps:
    steps = wallaroo.Steps()
    steps.computation(
        "celsius-to-fahrenheit",
        lambda c: c * 1.8 + 32,
        decoder=decode_float,
        encoder=encode_float,
    )
    steps.computation_multi("split", split, decoder=bytes.decode)
    steps.key_by("key-word", key_word)
    steps.state_computation("count", count, state=WordTotal)
    return steps


def test_computation_decodes_computes_and_encodes_keeping_the_key():
    h = Harness(build_steps())
    out = h.run("celsius-to-fahrenheit", [encode_float(100.0), encode_float(-40.0)], key=b"t1")
    assert out == [Emitted(b"t1", encode_float(212.0)), Emitted(b"t1", encode_float(-40.0))]


def test_computation_returning_none_filters_the_event():
    steps = wallaroo.Steps()
    steps.computation("evens", lambda d: d if int(d) % 2 == 0 else None)
    assert Harness(steps).run("evens", [b"1", b"2", b"3", b"4"]) == [
        Emitted(b"", b"2"),
        Emitted(b"", b"4"),
    ]


def test_computation_multi_emits_each_item_in_order():
    h = Harness(build_steps())
    assert h.run("split", ["a bb", "", "c"], key="k") == [
        Emitted(b"k", b"a"),
        Emitted(b"k", b"bb"),
        Emitted(b"k", b"c"),
    ]


def test_computation_multi_accepts_a_generator_and_none():
    steps = wallaroo.Steps()
    steps.computation_multi("gen", lambda d: (d[:i] for i in range(1, len(d) + 1)) if d else None)
    assert Harness(steps).run("gen", [b"abc", b""]) == [
        Emitted(b"", b"a"),
        Emitted(b"", b"ab"),
        Emitted(b"", b"abc"),
    ]


def test_key_by_sets_the_key_and_keeps_the_payload():
    steps = wallaroo.Steps()
    steps.key_by("first-letter", lambda d: d[:1].upper(), decoder=bytes.decode)
    out = Harness(steps).run("first-letter", [b"apple", b"banana"], key=b"old", event_time=9)
    assert out == [Emitted(b"A", b"apple", 9), Emitted(b"B", b"banana", 9)]


def test_key_by_accepts_a_key_function_for_the_inputs():
    h = Harness(build_steps())
    out = h.run("key-word", [b"x", b"y"], key=lambda p: p + b"!")
    assert out == [Emitted(b"x", b"x"), Emitted(b"y", b"y")]


def test_state_computation_keeps_state_per_key_across_calls():
    h = Harness(build_steps())
    assert h.run("count", [b"a", b"a"], key=b"a") == [
        Emitted(b"a", b"a=1"),
        Emitted(b"a", b"a=2"),
    ]
    assert h.run("count", [b"b"], key=b"b") == [Emitted(b"b", b"b=1")]
    assert h.run("count", [b"a"], key=b"a") == [Emitted(b"a", b"a=3")]
    assert h.state("count", b"a").count == 3
    assert h.state("count", "b").count == 1
    assert h.state("count", b"never") is None


def test_state_is_the_same_across_batch_sizes():
    payloads = [b"w%d" % (i % 5) for i in range(50)]
    one = Harness(build_steps())
    many = Harness(build_steps())
    out_one = one.run("count", payloads, key=lambda p: p)
    out_many = many.run("count", payloads, key=lambda p: p, batch_size=7)
    assert out_one == out_many
    assert one.state("count", b"w3").count == many.state("count", b"w3").count == 10


def test_state_computation_multi_with_json_state():
    def running(data: bytes, state: dict):
        state["seen"] = state.get("seen", []) + [data.decode()]
        return [Output(",".join(state["seen"])), Output(b"n", key="count")]

    steps = wallaroo.Steps()
    steps.state_computation_multi("running", running, state=dict, state_codec=JsonCodec())
    h = Harness(steps)
    assert h.run("running", [b"x", b"y"], key=b"k") == [
        Emitted(b"k", b"x"),
        Emitted(b"count", b"n"),
        Emitted(b"k", b"x,y"),
        Emitted(b"count", b"n"),
    ]
    assert h.state("running", b"k") == {"seen": ["x", "y"]}


def test_pipeline_chains_steps_as_the_engine_would():
    h = Harness(build_steps())
    out = h.pipeline(["split", "key-word", "count"], [b"to be or", b"not to be"])
    assert out == [
        Emitted(b"to", b"to=1"),
        Emitted(b"be", b"be=1"),
        Emitted(b"or", b"or=1"),
        Emitted(b"not", b"not=1"),
        Emitted(b"to", b"to=2"),
        Emitted(b"be", b"be=2"),
    ]
    assert h.state("count", b"be").count == 2


def test_output_can_set_key_and_event_time():
    steps = wallaroo.Steps()
    steps.computation("route", lambda d: Output(d, key=d[:1], event_time=123))
    steps.computation("inherit", lambda d: d)
    h = Harness(steps)
    assert h.run("route", [b"ab"], key=b"in", event_time=7) == [Emitted(b"a", b"ab", 123)]
    assert h.run("inherit", [b"ab"], key=b"in", event_time=7) == [Emitted(b"in", b"ab", 7)]


def test_output_with_empty_key_makes_the_output_unkeyed():
    steps = wallaroo.Steps()
    steps.computation("drop-key", lambda d: Output(d, key=b""))
    assert Harness(steps).run("drop-key", [b"x"], key=b"k") == [Emitted(b"", b"x")]


def test_run_raises_step_failed_with_the_errors_after_applying_the_batch():
    h = Harness(build_steps())
    with pytest.raises(StepFailed) as info:
        h.run("celsius-to-fahrenheit", [b"short", encode_float(0.0)], key=b"t")
    assert len(info.value.errors) == 1
    assert info.value.errors[0].startswith(
        "step 'celsius-to-fahrenheit' key b't': error: unpack requires a buffer of 8 bytes"
    )


def test_run_without_raising_returns_the_other_outputs_and_keeps_errors():
    h = Harness(build_steps())
    out = h.run(
        "celsius-to-fahrenheit", [b"short", encode_float(0.0)], key=b"t", raise_errors=False
    )
    assert out == [Emitted(b"t", encode_float(32.0))]
    assert len(h.errors) == 1


def test_pipeline_stops_at_the_first_failing_step_when_raising():
    steps = build_steps()
    steps.computation("boom", lambda d: 1 / 0)
    h = Harness(steps)
    with pytest.raises(StepFailed, match="ZeroDivisionError"):
        h.pipeline(["split", "key-word", "boom", "count"], [b"a"])
    assert h.state("count", b"a") is None


def test_unknown_step_name_lists_the_registered_ones():
    with pytest.raises(KeyError, match="no step 'nope'; registered: celsius-to-fahrenheit, split"):
        Harness(build_steps()).run("nope", [b"x"])


def test_state_of_a_stateless_step_is_an_error():
    with pytest.raises(ValueError, match="no state"):
        Harness(build_steps()).state("split", b"k")
