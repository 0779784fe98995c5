"""process_batch at the wire level: results, errors, state rollback, state writes."""

import pickle

import pytest

import wallaroo
from wallaroo import JsonCodec, Output, PickleCodec, _core
from wallaroo._core import MAX_ERROR_MESSAGE, process_batch
from wallaroo._pb import wallaroo_pb2 as pb


@pytest.fixture(autouse=True, params=["c", "python"])
def sdk_path(request, monkeypatch):
    """Every test on both paths: the C one (when built) with its fallback,
    and the pure-Python one alone."""
    if request.param == "python":
        monkeypatch.setattr(_core, "fast_reply", None)
    return request.param


def make_batch(events, states=(), batch_id=5):
    """events: [(key, payload)]; states: [(key, value or None)]."""
    batch = pb.Batch(batch_id=batch_id, step_id=1)
    for key, payload in events:
        batch.events.add(key=key, payload=payload)
    for key, value in states:
        entry = batch.states.add(key=key)
        if value is not None:
            entry.value = value
            entry.present = True
    return batch


def state_batch(events, known=None, codec=PickleCodec()):
    """A state batch with one StateEntry per distinct key, as the engine sends."""
    known = known or {}
    keys = dict.fromkeys(k for k, _ in events)
    states = [(k, codec.dumps(known[k]) if k in known else None) for k in keys]
    return make_batch(events, states)


def one_step(register):
    steps = wallaroo.Steps()
    register(steps)
    return steps.get(steps.names()[0])


def outputs(result):
    return [(o.key if o.has_key else None, o.payload) for o in result.outputs]


def reply_states(reply):
    return {e.key: (pickle.loads(e.value) if e.present else None) for e in reply.states}


# -- stateless --


def test_reply_has_the_batch_id_and_one_result_per_event_in_order():
    step = one_step(lambda s: s.computation("up", bytes.upper))
    reply = process_batch(step, make_batch([(b"k", b"a"), (b"k", b"b"), (b"j", b"c")], batch_id=77))
    assert reply.batch_id == 77
    assert [outputs(r) for r in reply.results] == [[(None, b"A")], [(None, b"B")], [(None, b"C")]]
    assert not reply.states


def test_user_exception_fails_only_that_event_with_the_documented_text():
    def parse(d):
        return str(int(d) * 2)

    step = one_step(lambda s: s.computation("double", parse))
    reply = process_batch(step, make_batch([(b"k1", b"1"), (b"k2", b"x"), (b"k3", b"3")]))
    assert outputs(reply.results[0]) == [(None, b"2")]
    assert reply.results[1].error == (
        "step 'double' key b'k2': ValueError: invalid literal for int() with base 10: b'x'"
    )
    assert not reply.results[1].outputs
    assert outputs(reply.results[2]) == [(None, b"6")]
    assert not reply.results[0].error and not reply.results[2].error


def test_decoder_error_is_a_per_event_error():
    step = one_step(lambda s: s.computation("t", lambda x: x, decoder=lambda b: b.decode("ascii")))
    reply = process_batch(step, make_batch([(b"k", b"\xff"), (b"k", b"ok")]))
    assert reply.results[0].error.startswith("step 't' key b'k': UnicodeDecodeError: ")
    assert outputs(reply.results[1]) == [(None, b"ok")]


def test_default_encoder_error_says_to_give_an_encoder():
    step = one_step(lambda s: s.computation("len", len))
    reply = process_batch(step, make_batch([(b"k", b"abc")]))
    assert reply.results[0].error.startswith("step 'len' key b'k': TypeError: ")
    assert "give the step an encoder" in reply.results[0].error


def test_custom_encoder_error_is_a_per_event_error():
    def encoder(v):
        if v == "bad":
            raise RuntimeError("cannot encode")
        return v.encode()

    step = one_step(lambda s: s.computation("e", bytes.decode, encoder=encoder))
    reply = process_batch(step, make_batch([(b"k", b"bad"), (b"k", b"good")]))
    assert reply.results[0].error == "step 'e' key b'k': RuntimeError: cannot encode"
    assert outputs(reply.results[1]) == [(None, b"good")]


def test_multi_failing_midway_sends_no_partial_outputs():
    def gen(d):
        yield d
        raise ValueError("second")

    step = one_step(lambda s: s.computation_multi("g", gen))
    reply = process_batch(step, make_batch([(b"k", b"x")]))
    assert not reply.results[0].outputs
    assert reply.results[0].error == "step 'g' key b'k': ValueError: second"


def test_multi_encoder_failing_on_a_later_item_sends_no_partial_outputs():
    step = one_step(lambda s: s.computation_multi("m", lambda d: [d, 3]))
    reply = process_batch(step, make_batch([(b"k", b"x")]))
    assert not reply.results[0].outputs
    assert "TypeError" in reply.results[0].error


@pytest.mark.parametrize("bad", [b"one output", "one output", Output(b"x")])
def test_multi_returning_a_single_output_is_an_error(bad):
    step = one_step(lambda s: s.computation_multi("m", lambda d: bad))
    reply = process_batch(step, make_batch([(b"k", b"x")]))
    assert "must return an iterable of outputs" in reply.results[0].error
    assert not reply.results[0].outputs


def test_output_key_and_event_time_reach_the_wire():
    step = one_step(
        lambda s: s.computation_multi(
            "o", lambda d: [Output(d, key="new", event_time=99), d, Output(d, key=b"")]
        )
    )
    reply = process_batch(step, make_batch([(b"k", b"p")]))
    o = reply.results[0].outputs
    assert (o[0].has_key, o[0].key, o[0].payload, o[0].event_time) == (True, b"new", b"p", 99)
    assert (o[1].has_key, o[1].key, o[1].event_time) == (False, b"", 0)
    assert (o[2].has_key, o[2].key) == (True, b"")


def test_long_exception_messages_are_cut():
    step = one_step(lambda s: s.computation("long", lambda d: (_ for _ in ()).throw(ValueError("x" * 10000))))
    reply = process_batch(step, make_batch([(b"k", b"")]))
    error = reply.results[0].error
    assert error.endswith("x...")
    assert len(error) < MAX_ERROR_MESSAGE + 100


def test_an_exception_whose_str_fails_is_still_reported():
    class Weird(Exception):
        def __str__(self):
            raise RuntimeError("no")

    def fail(d):
        raise Weird()

    step = one_step(lambda s: s.computation("w", fail))
    reply = process_batch(step, make_batch([(b"k", b"")]))
    assert reply.results[0].error == "step 'w' key b'k': Weird: <unprintable exception>"


# -- key_by --


def test_key_by_result_carries_the_new_key_and_no_outputs():
    step = one_step(lambda s: s.key_by("kb", lambda d: d.decode().upper(), decoder=lambda b: b))
    reply = process_batch(step, make_batch([(b"old", b"abc"), (b"old", b"\xc3\xa9")]))
    assert [r.key for r in reply.results] == [b"ABC", "É".encode()]
    assert not reply.results[0].outputs


def test_key_by_returning_a_non_key_is_a_per_event_error():
    step = one_step(lambda s: s.key_by("kb", len))
    reply = process_batch(step, make_batch([(b"k", b"abc")]))
    assert reply.results[0].error == "step 'kb' key b'k': TypeError: a key must be bytes or str, not int"
    assert reply.results[0].key == b""


# -- state --


def appender(data, state):
    state.append(data)
    if data.startswith(b"bad"):
        raise ValueError(f"bad event {data!r}")
    return b",".join(state)


def test_state_is_mutated_in_place_across_events_of_a_key():
    step = one_step(lambda s: s.state_computation("app", appender, state=list))
    reply = process_batch(step, state_batch([(b"a", b"1"), (b"b", b"x"), (b"a", b"2")]))
    assert [outputs(r) for r in reply.results] == [[(None, b"1")], [(None, b"x")], [(None, b"1,2")]]
    assert reply_states(reply) == {b"a": [b"1", b"2"], b"b": [b"x"]}


def test_failed_event_leaves_its_key_state_as_before_it():
    step = one_step(lambda s: s.state_computation("app", appender, state=list))
    reply = process_batch(
        step, state_batch([(b"a", b"1"), (b"a", b"bad"), (b"a", b"2")], known={b"a": [b"0"]})
    )
    assert outputs(reply.results[0]) == [(None, b"0,1")]
    assert reply.results[1].error == "step 'app' key b'a': ValueError: bad event b'bad'"
    assert outputs(reply.results[2]) == [(None, b"0,1,2")]
    assert reply_states(reply) == {b"a": [b"0", b"1", b"2"]}


def test_failed_event_does_not_touch_other_keys():
    step = one_step(lambda s: s.state_computation("app", appender, state=list))
    reply = process_batch(
        step, state_batch([(b"a", b"1"), (b"b", b"1"), (b"b", b"bad"), (b"a", b"2")])
    )
    assert reply_states(reply) == {b"a": [b"1", b"2"], b"b": [b"1"]}


def test_known_key_whose_only_event_fails_sends_no_state():
    step = one_step(lambda s: s.state_computation("app", appender, state=list))
    reply = process_batch(step, state_batch([(b"a", b"bad")], known={b"a": [b"0"]}))
    assert reply.results[0].error
    assert not reply.states


def test_new_key_whose_only_event_fails_gets_no_state():
    step = one_step(lambda s: s.state_computation("app", appender, state=list))
    reply = process_batch(step, state_batch([(b"n", b"bad1"), (b"n", b"bad2")]))
    assert all(r.error for r in reply.results)
    assert not reply.states


def test_new_key_failing_first_then_succeeding_starts_from_a_fresh_state():
    step = one_step(lambda s: s.state_computation("app", appender, state=list))
    reply = process_batch(step, state_batch([(b"n", b"bad"), (b"n", b"1")]))
    assert outputs(reply.results[1]) == [(None, b"1")]
    assert reply_states(reply) == {b"n": [b"1"]}


def test_multi_state_generator_failing_midway_rolls_back_its_state_changes():
    def gen(data, state):
        for part in data.split(b" "):
            state.append(part)
            if part == b"boom":
                raise ValueError("boom")
            yield part

    step = one_step(lambda s: s.state_computation_multi("g", gen, state=list))
    reply = process_batch(step, state_batch([(b"k", b"a b"), (b"k", b"c boom d"), (b"k", b"e")]))
    assert outputs(reply.results[0]) == [(None, b"a"), (None, b"b")]
    assert not reply.results[1].outputs and reply.results[1].error
    assert outputs(reply.results[2]) == [(None, b"e")]
    assert reply_states(reply) == {b"k": [b"a", b"b", b"e"]}


def test_only_changed_or_new_states_are_sent_back():
    def touch(data, state):
        if data == b"inc":
            state["n"] += 1
        return None

    step = one_step(
        lambda s: s.state_computation(
            "t", touch, state=lambda: {"n": 0}, state_codec=JsonCodec()
        )
    )
    known = {b"changed": {"n": 1}, b"read-only": {"n": 5}}
    reply = process_batch(
        step,
        state_batch(
            [(b"changed", b"inc"), (b"read-only", b"look"), (b"new", b"look")],
            known=known,
            codec=JsonCodec(),
        ),
    )
    assert [(e.key, e.value, e.present) for e in reply.states] == [
        (b"changed", b'{"n":2}', True),
        (b"new", b'{"n":0}', True),
    ]


def test_state_codec_failing_to_load_fails_the_events_of_that_key():
    step = one_step(lambda s: s.state_computation("app", appender, state=list))
    batch = make_batch([(b"a", b"1"), (b"b", b"1"), (b"a", b"2")], [(b"a", b"not a pickle"), (b"b", None)])
    reply = process_batch(step, batch)
    assert reply.results[0].error.startswith("step 'app' key b'a': UnpicklingError: ")
    assert reply.results[0].error.endswith("(loading the state)")
    assert reply.results[2].error.endswith("(loading the state)")
    assert outputs(reply.results[1]) == [(None, b"1")]
    assert reply_states(reply) == {b"b": [b"1"]}


def test_state_factory_failing_fails_the_event():
    def factory():
        raise RuntimeError("no state today")

    step = one_step(lambda s: s.state_computation("f", lambda d, st: d, state=factory))
    reply = process_batch(step, state_batch([(b"a", b"1")]))
    assert reply.results[0].error == (
        "step 'f' key b'a': RuntimeError: no state today (making a new state)"
    )
    assert not reply.states


def test_unsaveable_state_fails_every_event_of_that_key_only():
    def keep(data, state):
        state.append(data)
        if data == b"lambda":
            state.append(lambda: None)  # pickle cannot save it
        return data

    step = one_step(lambda s: s.state_computation("k", keep, state=list))
    reply = process_batch(step, state_batch([(b"a", b"x"), (b"b", b"y"), (b"a", b"lambda")]))
    assert reply.results[0].error.endswith("(saving the state)")
    assert reply.results[2].error.endswith("(saving the state)")
    assert not reply.results[0].outputs and not reply.results[2].outputs
    assert outputs(reply.results[1]) == [(None, b"y")]
    assert reply_states(reply) == {b"b": [b"y"]}


def test_non_deterministic_step_failing_on_replay_fails_the_earlier_event_too(sdk_path):
    calls = {"first": 0}

    def flaky(data, state):
        if data == b"first":
            calls["first"] += 1
            if calls["first"] > 1:
                raise RuntimeError("different the second time")
        state.append(data)
        if data == b"bad":
            raise ValueError("bad")
        return data

    step = one_step(lambda s: s.state_computation("f", flaky, state=list))
    reply = process_batch(step, state_batch([(b"k", b"first"), (b"k", b"bad"), (b"k", b"after")]))
    if sdk_path == "python":
        assert reply.results[0].error.endswith("(run again to restore the state)")
    else:
        # The C path ran the batch first, declined it at "bad", and the
        # Python path's own first run is already the second call.
        assert reply.results[0].error == (
            "step 'f' key b'k': RuntimeError: different the second time")
    assert not reply.results[0].outputs
    assert reply.results[1].error == "step 'f' key b'k': ValueError: bad"
    assert outputs(reply.results[2]) == [(None, b"after")]
    assert reply_states(reply) == {b"k": [b"after"]}


def test_state_entry_present_false_means_new_state_from_the_factory():
    seen = []

    def record(data, state):
        seen.append(dict(state))
        state["x"] = data.decode()

    step = one_step(
        lambda s: s.state_computation(
            "r", record, state=lambda: {"fresh": True}, state_codec=JsonCodec()
        )
    )
    batch = make_batch([(b"new", b"1"), (b"old", b"2")], [(b"new", None), (b"old", b'{"x":"0"}')])
    reply = process_batch(step, batch)
    assert seen == [{"fresh": True}, {"x": "0"}]
    assert {e.key: e.value for e in reply.states} == {
        b"new": b'{"fresh":true,"x":"1"}',
        b"old": b'{"x":"2"}',
    }
