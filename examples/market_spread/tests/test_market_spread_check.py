"""check.py catches every kind of wrong output."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(EXAMPLE))

import spread_formats as fmt  # noqa: E402


def load(name):
    spec = importlib.util.spec_from_file_location(
        f"market_spread_{name}", EXAMPLE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module     # so pickle finds its classes
    spec.loader.exec_module(module)
    return module


gen = load("gen")
expected = load("expected")
check = load("check")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    for name, content in gen.generate(20000, 5000, seed=9).items():
        (d / name).write_bytes(content)
    return d


@pytest.fixture(scope="module")
def wanted(data_dir):
    records = expected.expected(str(data_dir))
    assert len(records) > 100
    return records


def interleaved(records):
    """The same records, symbols interleaved differently (sorted by symbol)
    but each symbol's records in their order: a legitimate output."""
    return sorted(records, key=lambda r: r[fmt.OUTPUT_SYMBOL])


def same_symbol_pair(records):
    """Indexes of two records of the same symbol, not adjacent."""
    first = records[0][fmt.OUTPUT_SYMBOL]
    i = [k for k, r in enumerate(records) if r[fmt.OUTPUT_SYMBOL] == first]
    return i[0], i[5]


def test_the_expected_output_passes(wanted):
    report = check.compare(list(wanted), wanted)
    assert report.ok
    assert report.line() == (f"outputs {len(wanted)} expected {len(wanted)} "
                             "missing 0 unexpected 0 out-of-order 0 "
                             "malformed 0")


def test_another_interleaving_of_symbols_passes(wanted):
    shuffled = interleaved(wanted)
    assert shuffled != wanted
    assert check.compare(shuffled, wanted).ok


def test_a_missing_record_is_caught(wanted):
    report = check.compare(wanted[:10] + wanted[11:], wanted)
    assert not report.ok
    assert (report.missing, report.unexpected, report.out_of_order) == (
        1, 0, 0)


def test_a_duplicated_record_is_caught(wanted):
    report = check.compare(wanted[:11] + wanted[10:], wanted)
    assert not report.ok
    assert (report.missing, report.unexpected, report.out_of_order) == (
        0, 1, 0)


def test_a_corrupted_record_is_caught(wanted):
    actual = list(wanted)
    bad = bytearray(actual[7])
    bad[30] ^= 0x01               # a bit of the price
    actual[7] = bytes(bad)
    report = check.compare(actual, wanted)
    assert not report.ok
    assert (report.missing, report.unexpected) == (1, 1)


def test_a_reordered_pair_of_one_symbol_is_caught(wanted):
    actual = list(wanted)
    i, j = same_symbol_pair(actual)
    actual[i], actual[j] = actual[j], actual[i]
    report = check.compare(actual, wanted)
    assert not report.ok
    assert (report.missing, report.unexpected) == (0, 0)
    assert report.out_of_order >= 1


def test_a_record_moved_later_counts_once(wanted):
    actual = list(wanted)
    i, j = same_symbol_pair(actual)
    actual.insert(j, actual.pop(i))
    assert check.compare(actual, wanted).out_of_order == 1


def test_a_short_frame_is_malformed(wanted):
    report = check.compare(list(wanted) + [wanted[0][:67]], wanted)
    assert not report.ok
    assert (report.malformed, report.unexpected) == (1, 1)


def test_a_truncated_file_is_caught(tmp_path, data_dir, wanted):
    out = tmp_path / "rejected.bin"
    out.write_bytes(b"".join(fmt.frame(r) for r in wanted)[:-10])
    result = run_check(out, data_dir)
    assert result.returncode == 1
    assert "missing 1" in result.stdout and "malformed 1" in result.stdout


def test_an_empty_output_is_caught(wanted):
    report = check.compare([], wanted)
    assert not report.ok and report.missing == len(wanted)


def run_check(out, data_dir):
    return subprocess.run([sys.executable, str(EXAMPLE / "check.py"),
                           str(out), str(data_dir)],
                          capture_output=True, text=True, timeout=120)


def test_the_command_exits_0_on_a_right_output(tmp_path, data_dir, wanted):
    out = tmp_path / "rejected.bin"
    out.write_bytes(b"".join(fmt.frame(r) for r in interleaved(wanted)))
    result = run_check(out, data_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == "OK"


def test_the_command_exits_1_on_a_wrong_output(tmp_path, data_dir, wanted):
    out = tmp_path / "rejected.bin"
    out.write_bytes(b"".join(fmt.frame(r) for r in wanted[1:]))
    result = run_check(out, data_dir)
    assert result.returncode == 1
    assert "missing 1" in result.stdout
    assert result.stdout.splitlines()[-1] == "FAIL"


def test_the_command_exits_2_without_data(tmp_path):
    result = run_check(tmp_path / "none.bin", tmp_path / "nodata")
    assert result.returncode == 2
