"""Celsius end to end: gen.py, the real engine with two runners, check.py.
Skipped when no wallaroo-engine binary is found (set
WALLAROO_ENGINE, put it on PATH, or build it in build/)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1]
ROOT = EXAMPLE.parents[1]


def find_engine():
    for candidate in (os.environ.get("WALLAROO_ENGINE"),
                      shutil.which("wallaroo-engine"),
                      ROOT / "build" / "wallaroo-engine"):
        if candidate and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


ENGINE = find_engine()
pytestmark = pytest.mark.skipif(ENGINE is None, reason="no wallaroo-engine")


def copy_example(tmp_path):
    """A copy of the example beside a link to the SDK, so the topology's
    relative paths (data/, out/, ../../sdk-python) hold and the run leaves
    nothing in the source tree."""
    (tmp_path / "examples").mkdir()
    (tmp_path / "sdk-python").symlink_to(ROOT / "sdk-python")
    work = tmp_path / "examples" / EXAMPLE.name
    shutil.copytree(EXAMPLE, work, ignore=shutil.ignore_patterns(
        "data", "out", "tests", "__pycache__", ".pytest_cache"))
    return work


def run(argv, cwd, timeout):
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def test_the_engine_output_passes_the_check(tmp_path):
    work = copy_example(tmp_path)
    gen = run([sys.executable, "gen.py", "--lines", "50000", "--seed", "3"],
              work, 60)
    assert gen.returncode == 0, gen.stderr
    engine = run([ENGINE, "--topology", "topology.yaml"], work, 300)
    assert engine.returncode == 0, engine.stderr[-3000:]
    assert "Sanitizer" not in engine.stderr
    assert "runtime error:" not in engine.stderr
    check = run([sys.executable, "check.py", "out/fahrenheit.txt",
                 "data/celsius.txt"], work, 60)
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.splitlines()[-1] == "OK"
