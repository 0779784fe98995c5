"""The Celsius example: its generator, its checker and its runner."""

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(EXAMPLE.parents[1] / "sdk-python"))

import wallaroo.testing  # noqa: E402


def load(name):
    """EXAMPLE/NAME.py under a name of its own: every example has a gen.py."""
    spec = importlib.util.spec_from_file_location(
        f"celsius_{name}", EXAMPLE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module     # so pickle finds its classes
    spec.loader.exec_module(module)
    return module


gen = load("gen")
check = load("check")
runner = load("celsius")


@pytest.fixture(scope="module")
def inputs():
    return check.lines(gen.generate(2000, seed=3))


@pytest.fixture(scope="module")
def outputs(inputs):
    return [check.fahrenheit(line) for line in inputs]


def test_the_same_seed_gives_the_same_bytes():
    assert gen.generate(500, seed=8) == gen.generate(500, seed=8)
    assert gen.generate(500, seed=8) != gen.generate(500, seed=9)


def test_lines_are_decimals_between_minus_and_plus_100(inputs):
    assert len(inputs) == 2000
    for line in inputs:
        assert re.fullmatch(rb"-?\d{1,3}(\.\d{1,3})?", line)
        assert -100 <= float(line) <= 100
    assert any(float(line) < 0 for line in inputs)
    assert any(b"." not in line for line in inputs)


def test_the_command_writes_the_file(tmp_path):
    out = tmp_path / "d" / "c.txt"
    assert gen.main(["--lines", "30", "--seed", "2", "--out", str(out)]) == 0
    assert out.read_bytes() == gen.generate(30, seed=2)


@pytest.mark.parametrize("celsius, fahrenheit", [
    (b"0", b"32.00"),
    (b"100", b"212.00"),
    (b"-40", b"-40.00"),
    (b"36.6", b"97.88"),
    (b"-17.5", b"0.50"),
    (b"21.125", b"70.03"),      # 70.025 in binary is a hair above
    (b"-17.78", b"-0.00"),      # -0.004, and %.2f keeps the sign
])
def test_hand_computed_conversions(celsius, fahrenheit):
    assert check.fahrenheit(celsius) == fahrenheit


def test_the_right_output_passes(outputs, inputs):
    report = check.compare(outputs, inputs)
    assert report.ok and report.line() == "outputs 2000 inputs 2000 wrong 0"


def test_a_missing_line_is_caught(outputs, inputs):
    assert not check.compare(outputs[:-1], inputs).ok
    assert not check.compare(outputs[1:], inputs).ok


def test_a_duplicated_line_is_caught(outputs, inputs):
    assert not check.compare(outputs + outputs[-1:], inputs).ok


def test_a_corrupted_line_is_caught(outputs, inputs):
    bad = list(outputs)
    bad[100] = bad[100][:-1] + b"9" if bad[100][-1:] != b"9" else b"0"
    report = check.compare(bad, inputs)
    assert not report.ok and report.wrong == 1
    assert report.examples[0][0] == 101


def test_a_reordered_pair_is_caught(outputs, inputs):
    i = next(k for k in range(len(outputs) - 1)
             if outputs[k] != outputs[k + 1])
    bad = list(outputs)
    bad[i], bad[i + 1] = bad[i + 1], bad[i]
    assert check.compare(bad, inputs).wrong == 2


def run_check(tmp_path, output_lines, input_lines):
    out = tmp_path / "out.txt"
    src = tmp_path / "in.txt"
    out.write_bytes(b"".join(line + b"\n" for line in output_lines))
    src.write_bytes(b"".join(line + b"\n" for line in input_lines))
    return subprocess.run([sys.executable, str(EXAMPLE / "check.py"),
                           str(out), str(src)],
                          capture_output=True, text=True, timeout=60)


def test_the_command_exits_0_or_1(tmp_path, outputs, inputs):
    good = run_check(tmp_path, outputs, inputs)
    assert good.returncode == 0 and good.stdout.endswith("OK\n")
    bad = run_check(tmp_path, outputs[:-1], inputs)
    assert bad.returncode == 1 and bad.stdout.endswith("FAIL\n")
    assert "outputs 1999 inputs 2000 wrong 1" in bad.stdout


def test_the_runner_gives_the_checker_outputs(outputs, inputs):
    emitted = wallaroo.testing.Harness(runner.build()).run(
        "celsius-to-fahrenheit", inputs)
    assert [e.payload for e in emitted] == outputs
