"""The wallaroo-engine command line: options, exit codes, and every bad
topology file of tests/topology/bad reported as file:line:col lines."""
import glob
import os
import subprocess

import pytest

from conftest import ROOT, engine_binary

BAD = sorted(glob.glob(os.path.join(ROOT, "tests", "topology", "bad", "*.yaml")))
GOOD = sorted(glob.glob(os.path.join(ROOT, "tests", "topology", "good", "*.yaml")))


def run(*args, cwd=None):
    return subprocess.run([engine_binary()] + list(args), capture_output=True, text=True, errors="replace",
                          timeout=30, cwd=cwd)


def expectations(path):
    out = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("# expect:"):
                out.append(line[len("# expect:"):].strip())
    return out


def test_there_are_bad_files_to_check():
    assert len(BAD) >= 50


@pytest.mark.parametrize("path", BAD, ids=os.path.basename)
def test_bad_topology_exits_3_and_names_each_problem(path):
    want = expectations(path)
    assert want, "%s has no '# expect:' line" % path
    r = run("--check-config", path)
    assert r.returncode == 3, r.stderr
    lines = [l for l in r.stderr.splitlines() if l.startswith(path + ":")]
    assert [l[len(path) + 1:] for l in lines] == want
    assert "TOPO-ERROR %s is invalid" % path in r.stderr
    assert r.stdout == ""


@pytest.mark.parametrize("path", GOOD, ids=os.path.basename)
def test_good_topology_prints_the_resolved_plan(path):
    r = run("--check-config", path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("application: ")
    assert "partitions: " in r.stdout and "limits:" in r.stdout


def test_running_a_bad_topology_starts_nothing_and_exits_3(tmp_path):
    bad = tmp_path / "t.yaml"
    bad.write_text("application: x\nsources: {}\n")
    r = run("--topology", str(bad))
    assert r.returncode == 3
    assert str(bad) + ":" in r.stderr
    assert "SUP-SPAWN" not in r.stderr and "READY" not in r.stderr


@pytest.mark.parametrize("kind", ["big-file", "endless"])
def test_a_file_too_large_for_a_topology_is_refused_without_reading_it_all(tmp_path, kind):
    if kind == "big-file":
        path = tmp_path / "huge.yaml"
        with open(path, "w") as f:
            f.write("application: x\n# " + "x" * (17 << 20) + "\n")
        path = str(path)
    else:
        path = "/dev/zero"  # never ends: read whole, it would take all memory
    r = run("--check-config", path)
    assert r.returncode == 3
    assert path + ": larger than 16 MiB: not a topology file" in r.stderr


def test_missing_topology_file_is_named():
    r = run("--check-config", "/nonexistent/topology.yaml")
    assert r.returncode == 3
    assert "/nonexistent/topology.yaml" in r.stderr


@pytest.mark.parametrize("args", [[], ["--bogus"], ["--topology", "a", "--check-config", "b"],
                                  ["--topology", "a", "extra"]])
def test_bad_command_line_exits_2_with_usage(args):
    r = run(*args)
    assert r.returncode == 2
    assert "usage: wallaroo-engine" in r.stderr


def test_help_and_version():
    r = run("--help")
    assert r.returncode == 0 and "Exit codes: 0 done and drained" in r.stdout
    r = run("--version")
    assert r.returncode == 0 and r.stdout.startswith("wallaroo-engine ") and "protocol 1.0" in r.stdout
