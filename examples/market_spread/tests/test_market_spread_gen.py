"""gen.py: deterministic, well-formed data whose output does not depend on
the interleaving of the streams."""

import importlib.util
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(EXAMPLE))

import spread_formats as fmt  # noqa: E402


def load(name):
    """EXAMPLE/NAME.py under a name of its own: every example has a gen.py."""
    spec = importlib.util.spec_from_file_location(
        f"market_spread_{name}", EXAMPLE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module     # so pickle finds its classes
    spec.loader.exec_module(module)
    return module


gen = load("gen")
expected = load("expected")

ORDERS = 5000
UPDATES = 4000


@pytest.fixture(scope="module")
def files():
    data = gen.generate(ORDERS, UPDATES, seed=11)
    return {name: list(fmt.iter_frames(d)) for name, d in data.items()}


def test_the_same_seed_gives_the_same_bytes():
    assert gen.generate(300, 200, seed=5) == gen.generate(300, 200, seed=5)


def test_another_seed_gives_other_data():
    a = gen.generate(300, 200, seed=5)
    b = gen.generate(300, 200, seed=6)
    assert all(a[name] != b[name] for name in a)


def test_the_files_hold_the_requested_counts(files):
    assert len(files[fmt.INITIAL_NBBO_FILE]) == gen.SYMBOLS == 350
    assert len(files[fmt.NBBO_FILE]) == UPDATES
    assert len(files[fmt.ORDERS_FILE]) == ORDERS


def test_every_record_has_its_size_and_type_byte(files):
    for name in (fmt.INITIAL_NBBO_FILE, fmt.NBBO_FILE):
        assert {(len(r), r[0]) for r in files[name]} == {(42, 2)}
    assert {(len(r), r[0]) for r in files[fmt.ORDERS_FILE]} == {(53, 1)}


def test_the_initial_file_has_one_nbbo_per_symbol(files):
    symbols = [r[fmt.NBBO_SYMBOL] for r in files[fmt.INITIAL_NBBO_FILE]]
    assert len(set(symbols)) == 350


def test_symbols_are_up_to_4_uppercase_letters_padded_on_the_left(files):
    for r in files[fmt.INITIAL_NBBO_FILE]:
        assert re.fullmatch(rb" {0,3}[A-Z]{1,4}", r[fmt.NBBO_SYMBOL])
        assert len(r[fmt.NBBO_SYMBOL]) == 4


def test_orders_and_updates_only_name_known_symbols(files):
    known = {r[fmt.NBBO_SYMBOL] for r in files[fmt.INITIAL_NBBO_FILE]}
    assert {r[fmt.NBBO_SYMBOL] for r in files[fmt.NBBO_FILE]} <= known
    assert {r[fmt.ORDER_SYMBOL] for r in files[fmt.ORDERS_FILE]} <= known


def test_order_fields_are_well_formed(files):
    orders = [fmt.decode_order(r) for r in files[fmt.ORDERS_FILE]]
    assert {o.side for o in orders} == {1, 2}
    assert len({o.order_id for o in orders}) == ORDERS
    for o in orders:
        assert re.fullmatch(rb"[0-9A-Z]{6}", o.order_id)
        assert re.fullmatch(rb"\d{8}-\d\d:\d\d:\d\d\.\d{3}", o.transact_time)
        assert o.quantity > 0 and o.price > 0


def test_transact_times_look_like_the_contract_example(files):
    first = fmt.decode_nbbo(files[fmt.INITIAL_NBBO_FILE][0]).transact_time
    assert first == b"20261122-04:15:15.000"


def quotes_by_symbol(files):
    quotes = defaultdict(set)
    for name in (fmt.INITIAL_NBBO_FILE, fmt.NBBO_FILE):
        for r in files[name]:
            n = fmt.decode_nbbo(r)
            quotes[n.symbol].add((n.bid, n.offer))
    return quotes


def test_one_symbol_in_70_always_has_the_same_wide_quote(files):
    wide = {s: q for s, q in quotes_by_symbol(files).items()
            if any(expected.should_reject(b, o) for b, o in q)}
    assert len(wide) == 5
    for q in wide.values():
        assert len(q) == 1
        (bid, offer), = q
        assert offer - bid >= 0.5


def test_other_symbols_have_varying_spreads_far_below_both_thresholds(files):
    narrow = {s: q for s, q in quotes_by_symbol(files).items()
              if not any(expected.should_reject(b, o) for b, o in q)}
    assert len(narrow) == 345
    spreads = set()
    for q in narrow.values():
        for bid, offer in q:
            assert 0 < offer - bid < 0.045
            assert (offer - bid) / ((bid + offer) / 2) < 0.01
            spreads.add(round(offer - bid, 2))
    assert spreads == {0.01, 0.02, 0.03, 0.04}


def test_the_output_does_not_depend_on_the_interleaving(files):
    assert expected.undetermined_symbols(
        files[fmt.INITIAL_NBBO_FILE], files[fmt.NBBO_FILE],
        files[fmt.ORDERS_FILE]) == []


def test_the_command_writes_the_three_files(tmp_path):
    assert gen.main(["--orders", "10", "--nbbo", "20", "--seed", "3",
                     "--out", str(tmp_path / "d")]) == 0
    data = gen.generate(10, 20, seed=3)
    for name, content in data.items():
        assert (tmp_path / "d" / name).read_bytes() == content


def test_the_defaults_generate_in_a_few_seconds():
    # The target is under 5 s; the bound is loose so a busy machine does
    # not fail it, but an accidentally quadratic generator would.
    started = time.monotonic()
    data = gen.generate(500000, 500000, seed=1)
    assert time.monotonic() - started < 15
    assert len(data[fmt.ORDERS_FILE]) == 500000 * 57
    assert len(data[fmt.NBBO_FILE]) == 500000 * 46
