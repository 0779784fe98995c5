import pickle

import pytest

from wallaroo import JsonCodec, Output, PickleCodec, StateCodec
from wallaroo.codecs import encode_default, identity, key_bytes


def test_identity_returns_the_payload_itself():
    data = b"\x00\xffabc"
    assert identity(data) is data


@pytest.mark.parametrize(
    "value, expected",
    [
        (b"raw", b"raw"),
        (bytearray(b"ba"), b"ba"),
        (memoryview(b"mv"), b"mv"),
        ("héllo", "héllo".encode("utf-8")),
        ("", b""),
    ],
)
def test_default_encoder_accepts_bytes_like_and_str(value, expected):
    out = encode_default(value)
    assert out == expected
    assert type(out) is bytes


@pytest.mark.parametrize("value", [1, 2.5, None, ["a"], {"a": 1}, object()])
def test_default_encoder_rejects_other_types_and_says_to_give_an_encoder(value):
    with pytest.raises(TypeError, match="give the step an encoder"):
        encode_default(value)


def test_key_bytes_encodes_str_as_utf8_and_rejects_ints():
    assert key_bytes("ü") == "ü".encode("utf-8")
    assert key_bytes(bytearray(b"k")) == b"k"
    with pytest.raises(TypeError, match="bytes or str, not int"):
        key_bytes(3)


class Point:
    def __init__(self, x=0, y=0):
        self.x, self.y = x, y

    def __eq__(self, other):
        return (self.x, self.y) == (other.x, other.y)


def test_pickle_codec_round_trips_instances():
    codec = PickleCodec()
    data = codec.dumps(Point(1, 2))
    assert isinstance(data, bytes)
    assert codec.loads(data) == Point(1, 2)


def test_pickle_codec_uses_the_given_protocol():
    assert PickleCodec(protocol=2).dumps({"a": 1}) == pickle.dumps({"a": 1}, 2)


def test_json_codec_is_compact_sorted_utf8():
    codec = JsonCodec()
    assert codec.dumps({"b": 1, "a": ["é", None]}) == '{"a":["é",null],"b":1}'.encode("utf-8")
    assert codec.loads(b'{"a":[1,2]}') == {"a": [1, 2]}


def test_json_codec_gives_equal_bytes_for_equal_dicts_built_in_another_order():
    codec = JsonCodec()
    assert codec.dumps({"x": 1, "y": 2}) == codec.dumps({"y": 2, "x": 1})


def test_json_codec_rejects_what_json_cannot_hold():
    with pytest.raises(TypeError):
        JsonCodec().dumps(Point())


def test_both_codecs_satisfy_the_state_codec_protocol():
    assert isinstance(PickleCodec(), StateCodec)
    assert isinstance(JsonCodec(), StateCodec)
    assert not isinstance(object(), StateCodec)


def test_output_encodes_a_str_key_and_keeps_none():
    assert Output(1, key="clé").key == "clé".encode("utf-8")
    assert Output(1).key is None
    assert Output(1, event_time=5).event_time == 5


def test_output_rejects_bad_key_and_event_time():
    with pytest.raises(TypeError):
        Output(1, key=7)
    with pytest.raises(TypeError):
        Output(1, event_time=1.5)
    with pytest.raises(TypeError):
        Output(1, event_time=True)
