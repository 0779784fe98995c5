import pytest

import wallaroo
from wallaroo import JsonCodec, PickleCodec, Steps
from wallaroo._pb import wallaroo_pb2 as pb


def test_registering_the_same_name_twice_raises_value_error():
    steps = Steps()
    steps.computation("double", lambda d: d * 2)
    with pytest.raises(ValueError, match="'double' is already registered"):
        steps.key_by("double", lambda d: d)


def test_names_keep_registration_order_and_get_returns_the_step():
    steps = Steps()
    steps.key_by("b", lambda d: d)
    steps.computation_multi("a", lambda d: [d])
    steps.state_computation("c", lambda d, s: None, state=dict)
    assert steps.names() == ["b", "a", "c"]
    assert "a" in steps and "z" not in steps
    assert len(steps) == 3
    assert steps.get("c").kind == "state_computation"
    with pytest.raises(KeyError):
        steps.get("z")


def test_each_kind_maps_to_its_wire_kind():
    steps = Steps()
    steps.computation("c", lambda d: d)
    steps.computation_multi("cm", lambda d: [d])
    steps.key_by("k", lambda d: d)
    steps.state_computation("s", lambda d, s: d, state=dict)
    steps.state_computation_multi("sm", lambda d, s: [d], state=dict)
    kinds = {s.name: s.wire_kind for s in steps}
    assert kinds == {
        "c": pb.STEP_KIND_STATELESS,
        "cm": pb.STEP_KIND_STATELESS,
        "k": pb.STEP_KIND_KEY_BY,
        "s": pb.STEP_KIND_STATE,
        "sm": pb.STEP_KIND_STATE,
    }


def test_state_steps_default_to_the_pickle_codec():
    steps = Steps()
    steps.state_computation("s", lambda d, s: d, state=dict)
    steps.state_computation_multi("j", lambda d, s: [d], state=dict, state_codec=JsonCodec())
    assert isinstance(steps.get("s").state_codec, PickleCodec)
    assert isinstance(steps.get("j").state_codec, JsonCodec)


@pytest.mark.parametrize("name", ["", None, 3])
def test_a_step_name_must_be_a_non_empty_str(name):
    with pytest.raises(ValueError, match="non-empty str"):
        Steps().computation(name, lambda d: d)


def test_non_callables_are_rejected_at_registration():
    steps = Steps()
    with pytest.raises(TypeError, match="fn must be callable"):
        steps.computation("a", "not a function")
    with pytest.raises(TypeError, match="decoder must be callable"):
        steps.computation("a", lambda d: d, decoder=b"x")
    with pytest.raises(TypeError, match="state must be callable"):
        steps.state_computation("a", lambda d, s: d, state=None)
    with pytest.raises(TypeError, match="state_codec must have dumps"):
        steps.state_computation("a", lambda d, s: d, state=dict, state_codec=object())
    assert steps.names() == []

