"""Market Spread with the Go runner (go/, topology-go.yaml) against the
Python runner (market_spread.py, topology.yaml): the real engine runs the
same input through each, and the outputs must be the same.

Skipped when no wallaroo-engine binary is found (set WALLAROO_ENGINE, put it
on PATH, or build it in build/), or when `go` is not installed."""

import os
import re
import shutil
import struct
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1]
ROOT = EXAMPLE.parents[1]
RUNNER = "go/bin/market-spread"     # where topology-go.yaml runs it from


def find_engine():
    for candidate in (os.environ.get("WALLAROO_ENGINE"),
                      shutil.which("wallaroo-engine"),
                      ROOT / "build" / "wallaroo-engine"):
        if candidate and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


ENGINE = find_engine()
GO = shutil.which("go")
pytestmark = [
    pytest.mark.skipif(ENGINE is None, reason="no wallaroo-engine"),
    pytest.mark.skipif(GO is None, reason="no go toolchain to build the Go runner"),
]


def run(argv, cwd, timeout):
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def go_runner(tmp_path_factory):
    """The Go runner, built once from go/ into a temporary directory."""
    out = tmp_path_factory.mktemp("go-runner") / "market-spread"
    build = run([GO, "build", "-buildvcs=false", "-o", str(out), "."],
                EXAMPLE / "go", 600)
    assert build.returncode == 0, build.stdout + build.stderr
    return out


@pytest.fixture
def work(tmp_path, go_runner):
    """A copy of the example beside a link to the Python SDK, with the Go
    runner where topology-go.yaml expects it and data from gen.py."""
    (tmp_path / "examples").mkdir()
    (tmp_path / "sdk-python").symlink_to(ROOT / "sdk-python")
    work = tmp_path / "examples" / EXAMPLE.name
    shutil.copytree(EXAMPLE, work, ignore=shutil.ignore_patterns(
        "data", "out", "tests", "bin", "__pycache__", ".pytest_cache"))
    (work / RUNNER).parent.mkdir(parents=True)
    shutil.copy(go_runner, work / RUNNER)
    gen = run([sys.executable, "gen.py", "--orders", "30000", "--nbbo",
               "30000", "--seed", "3", "--out", "data"], work, 60)
    assert gen.returncode == 0, gen.stderr
    return work


def run_engine(work, topology):
    """Runs the engine on `topology` and returns the sink file's bytes."""
    shutil.rmtree(work / "out", ignore_errors=True)
    engine = run([ENGINE, "--topology", topology], work, 300)
    assert engine.returncode == 0, engine.stderr[-3000:]
    assert "Sanitizer" not in engine.stderr
    assert "runtime error:" not in engine.stderr
    return (work / "out" / "rejected.bin").read_bytes()


def pinned(work, topology):
    """A variant of `topology` whose output order is fixed: one runner
    instance with one batch in flight, so check-order handles its events
    one batch after the other, in the order they were queued. NBBO updates
    and orders still interleave by timing, but gen.py makes data whose
    decisions do not depend on that (see README.md), so the rejected
    orders come out in orders-file order. Returns its file name."""
    text = (work / topology).read_text()
    text, n = re.subn(r"(?m)^    instances: 2$", "    instances: 1", text)
    assert n == 1, "topology changed: update pinned()"
    text, n = re.subn(r"(?m)^(application: .*)$",
                      r"\1\nlimits: {inflight_batches: 1}", text)
    assert n == 1
    name = "pinned-" + topology
    (work / name).write_text(text)
    return name


def records(output: bytes):
    """The sink file's records (each framed by a big-endian u32 length)."""
    out = []
    pos = 0
    while pos < len(output):
        size = struct.unpack_from(">I", output, pos)[0]
        out.append(output[pos + 4:pos + 4 + size])
        pos += 4 + size
    assert pos == len(output), "a truncated record"
    return out


def per_symbol(output: bytes):
    """Each symbol's output records, in output order (the symbol is at
    bytes 11..14 of a record)."""
    by_symbol = defaultdict(list)
    for record in records(output):
        by_symbol[record[11:15]].append(record)
    return by_symbol


def test_the_go_topology_differs_from_the_python_one_only_in_its_program():
    plans = []
    for topology in ("topology.yaml", "topology-go.yaml"):
        check = run([ENGINE, "--check-config", topology], EXAMPLE, 60)
        assert check.returncode == 0, check.stderr
        plan = re.sub(r"(?m)^(file:|    argv:|    env:).*\n", "", check.stdout)
        plan = re.sub(r"(?m)^  go:$", "  py:", plan)
        plans.append(re.sub(r"(?m)^    program: go$", "    program: py", plan))
    assert plans[0] == plans[1]


def test_the_go_runner_rejects_the_orders_the_python_runner_rejects(work):
    python = run_engine(work, "topology.yaml")
    go = run_engine(work, "topology-go.yaml")
    check = run([sys.executable, "check.py", "out/rejected.bin", "data"],
                work, 120)
    assert check.stdout.splitlines()[-1] == "OK", check.stdout
    # Two runner instances check different symbols in parallel, and the
    # engine lets a symbol go ahead of another whose key is busy, so the
    # records of different symbols interleave differently from run to run
    # (two Python runs differ too). What is fixed is each symbol's own
    # sequence of records, which must be the same byte for byte; the whole
    # files are compared byte for byte in the pinned test below.
    assert len(go) == len(python)
    assert per_symbol(go) == per_symbol(python)
    assert sorted(records(go)) == sorted(records(python))


def test_the_outputs_are_byte_identical_when_the_order_is_pinned(work):
    python = run_engine(work, pinned(work, "topology.yaml"))
    go = run_engine(work, pinned(work, "topology-go.yaml"))
    assert len(records(python)) > 100
    assert go == python
