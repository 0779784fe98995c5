"""The chaos harness as a test suite: a short seeded run must be exactly
once; a control run without checkpoints must be caught; the checker must
see every kind of damage."""
import os
import re
import subprocess
import sys

import checker

HERE = os.path.dirname(os.path.abspath(__file__))
FIGURES = re.compile(r"^chaos seed=\d+ faults=(\d+) .* lost=(\d+) duplicated=(\d+) "
                     r"out_of_order=(\d+) gaps=(\d+) unexpected=(\d+) "
                     r"longest_recovery_s=[0-9.]+ engines=\d+$", re.M)


def harness(*args, timeout=600):
    p = subprocess.run([sys.executable, os.path.join(HERE, "harness.py")] + list(args),
                       capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout + p.stderr


def test_a_seeded_run_of_30_faults_is_exactly_once():
    rc, out = harness("--faults", "30", "--seed", "7")
    m = FIGURES.search(out)
    assert m, out
    print(m.group(0))  # the figures, in the test log
    assert rc == 0, out
    assert m.group(1) == "30"
    assert m.groups()[1:] == ("0",) * 5, out


def test_without_checkpoints_the_harness_sees_the_damage():
    # The negative control: the same application without --state-dir
    # loses its state on an engine kill and repeats outputs.
    rc, out = harness("--faults", "2", "--only", "kill-engine", "--control", "--seed", "3")
    m = FIGURES.search(out)
    assert m, out
    assert rc == 1, out
    assert int(m.group(3)) + int(m.group(2)) + int(m.group(5)) > 0, out


def write(tmp_path, lines):
    p = tmp_path / "out.txt"
    p.write_bytes(b"".join(l + b"\n" for l in lines))
    return str(p)


def test_checker_counts_lost_duplicated_out_of_order_and_gaps(tmp_path):
    want = checker.expected_counts({"a": 6}, 2, {b"f000": 2})
    assert want == {b"a000": 3, b"a001": 3, b"f000": 2}
    clean = [b"a000 1 ok", b"a001 1 ok", b"a000 2 ok", b"f000 1 ok", b"a001 2 ok",
             b"a000 3 ok", b"f000 2 ok", b"a001 3 ok"]
    assert checker.check(write(tmp_path, clean), want).clean()
    r = checker.check(write(tmp_path, [b"a000 1 ok", b"a000 3 gap-after-1", b"a000 2 ok",
                                       b"a001 1 ok", b"a001 1 gap-after-1", b"f000 1 ok",
                                       b"f000 2 ok", b"a001 2 ok", b"a001 3 ok",
                                       b"x999 1 ok"]), want)
    assert (r.lost, r.duplicated, r.out_of_order, r.gaps, r.unexpected) == (0, 1, 1, 2, 1)
    r = checker.check(write(tmp_path, clean[:-1]), want)
    assert r.lost == 1 and not r.clean()
