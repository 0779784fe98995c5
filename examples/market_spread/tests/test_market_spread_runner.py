"""The runner, market_spread.py: its codecs, and its step run through the
SDK's test harness against the model in expected.py."""

import importlib.util
import random
import struct
import sys
from collections import defaultdict
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(EXAMPLE))
sys.path.insert(0, str(EXAMPLE.parents[1] / "sdk-python"))

import spread_formats as fmt  # noqa: E402
import wallaroo.testing  # noqa: E402


def load(name):
    spec = importlib.util.spec_from_file_location(
        f"market_spread_{name}", EXAMPLE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module     # so pickle finds its classes
    spec.loader.exec_module(module)
    return module


runner = load("market_spread")
gen = load("gen")
expected = load("expected")

TIME = b"20261122-04:15:15.123"


def test_decode_reads_an_nbbo():
    record = fmt.NBBO.pack(2, b"  GE", TIME, 10.25, 10.5)
    assert runner.decode(record) == runner.Nbbo(b"  GE", TIME, 10.25, 10.5)


def test_decode_reads_an_order():
    record = fmt.ORDER.pack(1, 2, 77, b"00A1B2", b" IBM", 300.0, 151.75, TIME)
    assert runner.decode(record) == runner.Order(
        2, 77, b"00A1B2", b" IBM", 300.0, 151.75, TIME)


def test_decode_refuses_an_unknown_type():
    with pytest.raises(ValueError):
        runner.decode(b"\x07" + bytes(41))


def test_encode_writes_the_68_byte_output():
    order = runner.Order(2, 77, b"00A1B2", b" IBM", 300.0, 151.75, TIME)
    out = runner.encode(runner.RejectedOrder(order, 150.0, 160.0))
    assert out == fmt.encode_output(fmt.Order(*order), 150.0, 160.0)
    assert len(out) == 68


def test_the_state_codec_packs_17_bytes_and_round_trips():
    codec = runner.SymbolDataCodec()
    state = runner.SymbolData()
    state.last_bid, state.last_offer = 9.5, 10.5
    state.should_reject_trades = False
    data = codec.dumps(state)
    assert data == struct.pack(">dd?", 9.5, 10.5, False)
    back = codec.loads(data)
    assert (back.last_bid, back.last_offer, back.should_reject_trades) == (
        9.5, 10.5, False)


def test_a_fresh_symbol_rejects_with_a_zero_quote():
    state = runner.SymbolData()
    order = runner.Order(1, 1, b"000001", b"  GE", 1.0, 1.0, TIME)
    assert runner.check_order(order, state) == runner.RejectedOrder(
        order, 0.0, 0.0)


@pytest.mark.parametrize("bid, offer", [
    (10.00, 10.01), (10.00, 10.10), (0.10, 0.12), (0.97, 1.00),
    (0.609375, 0.640625), (0.609375, 0.640624), (1.10, 1.15),
    (10.00, 10.05), (0.0, 0.0)])
def test_the_runner_and_the_model_agree_on_thresholds(bid, offer):
    state = runner.SymbolData()
    nbbo = runner.Nbbo(b"  GE", TIME, bid, offer)
    assert runner.check_order(nbbo, state) is None
    assert state.should_reject_trades is expected.should_reject(bid, offer)
    assert (state.last_bid, state.last_offer) == (bid, offer)


def events_by_symbol(data, seed):
    """Per symbol, the initial NBBO, then its updates and orders merged in
    a random interleaving, as the engine might deliver them."""
    rng = random.Random(seed)
    events = defaultdict(list)
    for r in fmt.iter_frames(data[fmt.INITIAL_NBBO_FILE]):
        events[r[fmt.NBBO_SYMBOL]].append(r)
    later = defaultdict(lambda: ([], []))
    for r in fmt.iter_frames(data[fmt.NBBO_FILE]):
        later[r[fmt.NBBO_SYMBOL]][0].append(r)
    for r in fmt.iter_frames(data[fmt.ORDERS_FILE]):
        later[r[fmt.ORDER_SYMBOL]][1].append(r)
    for symbol, (updates, orders) in later.items():
        updates.reverse()
        orders.reverse()
        while updates or orders:
            pick = updates if (updates and (not orders or rng.random() < 0.5)
                               ) else orders
            events[symbol].append(pick.pop())
    return events


@pytest.mark.parametrize("interleaving", [1, 2])
def test_the_harness_gives_the_model_outputs(tmp_path, interleaving):
    data = gen.generate(4000, 3000, seed=21)
    for name, content in data.items():
        (tmp_path / name).write_bytes(content)
    want = defaultdict(list)
    for r in expected.expected(str(tmp_path)):
        want[r[fmt.OUTPUT_SYMBOL]].append(r)

    harness = wallaroo.testing.Harness(runner.build())
    got = defaultdict(list)
    for symbol, events in events_by_symbol(data, interleaving).items():
        for emitted in harness.run("check-order", events, key=symbol):
            assert emitted.key == symbol
            got[symbol].append(emitted.payload)
    assert sum(len(v) for v in want.values()) > 50
    assert dict(got) == dict(want)
