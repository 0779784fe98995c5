"""The record layouts, checked byte by byte against hand-computed offsets."""

import struct
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import spread_formats as fmt  # noqa: E402

TIME = b"20261122-04:15:15.123"


def f64(x):
    return struct.pack(">d", x)


def test_record_sizes_are_42_53_and_68_bytes():
    assert (fmt.NBBO.size, fmt.ORDER.size, fmt.OUTPUT.size) == (42, 53, 68)


def test_nbbo_fields_sit_at_their_offsets():
    record = b"\x02" + b"  GE" + TIME + f64(10.25) + f64(10.5)
    assert len(record) == 42
    assert fmt.decode_nbbo(record) == fmt.Nbbo(b"  GE", TIME, 10.25, 10.5)
    assert record[fmt.NBBO_SYMBOL] == b"  GE"


def test_order_fields_sit_at_their_offsets():
    record = (b"\x01" + b"\x02" + (123456).to_bytes(4, "big") + b"00A1B2"
              + b" IBM" + f64(300.0) + f64(151.75) + TIME)
    assert len(record) == 53
    assert fmt.decode_order(record) == fmt.Order(
        2, 123456, b"00A1B2", b" IBM", 300.0, 151.75, TIME)
    assert record[fmt.ORDER_SYMBOL] == b" IBM"


def test_output_fields_sit_at_their_offsets():
    order = fmt.Order(1, 7, b"ZZZZZ9", b"   F", 100.0, 12.5, TIME)
    record = fmt.encode_output(order, 12.0, 13.0)
    assert record == (b"\x01" + (7).to_bytes(4, "big") + b"ZZZZZ9" + b"   F"
                      + f64(100.0) + f64(12.5) + TIME + f64(12.0)
                      + f64(13.0))
    assert record[fmt.OUTPUT_SYMBOL] == b"   F"


def test_decoders_refuse_the_other_record_type():
    nbbo = b"\x02" + b"  GE" + TIME + f64(1) + f64(2)
    order = b"\x01\x01" + bytes(4) + b"AAAAAA  GE" + f64(1) + f64(2) + TIME
    with pytest.raises(ValueError):
        fmt.decode_order(nbbo)
    with pytest.raises(ValueError):
        fmt.decode_nbbo(order)


def test_frames_round_trip():
    records = [b"", b"a", b"abc" * 30]
    data = b"".join(fmt.frame(r) for r in records)
    assert data[:4] == b"\x00\x00\x00\x00"
    assert data[4:8] == b"\x00\x00\x00\x01"
    assert list(fmt.iter_frames(data)) == records


@pytest.mark.parametrize("data", [b"\x00\x00", b"\x00\x00\x00\x05abc"])
def test_a_truncated_frame_is_an_error(data):
    with pytest.raises(fmt.FramingError):
        list(fmt.iter_frames(data))
