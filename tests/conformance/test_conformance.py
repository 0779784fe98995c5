"""The conformance suite every connector must pass (issue 4): it connects
and delivers N messages; it resumes after being killed without loss or
duplicates reaching the sink; it stops cleanly on SIGTERM; it refuses to
go on with a wrong token. Each test runs the real engine with the
connector as a real process; kits.py says how to drive each connector."""
import collections
import json
import os
import re
import signal
import socket
import subprocess
import time

import pytest

from kits import KITS, PY, ROOT, payload

RAWRUNNER = os.path.join(ROOT, "tests", "engine", "rawrunner.py")
N = 20000
SOURCES = [k for k in KITS if k.role == "source"]
SINKS = [k for k in KITS if k.role == "sink"]
ids = lambda k: k.name  # noqa: E731


def yaml_list(argv):
    return json.dumps(argv)


def program(name, argv, env=None):
    return "  %s: {argv: %s, env: %s}\n" % (name, yaml_list(argv), json.dumps(env or {}))


def source_topology(kit, tmp):
    return ("application: conformance\n"
            "limits: {source_credits: 200, batch_max_events: 100}\n"
            "programs:\n" + program("raw", [PY, RAWRUNNER]) +
            program("conn", kit.argv(tmp), getattr(kit, "env", lambda t: {})(tmp)) +
            "sources:\n  in: {type: connector, program: conn}\n"
            "steps:\n  up: {kind: stateless, program: raw, function: upper, inputs: [in]}\n"
            "sinks:\n  out: {type: file, path: out.txt, framing: line, inputs: [up]}\n")


def sink_topology(kit, tmp, n, slow_ms=0):
    """A file of n lines through an upper-casing step into the sink kit.
    ``slow_ms`` per event in the step keeps the run going for the tests
    that stop the sink mid-stream (a fast sink would be done first)."""
    (tmp / "in.txt").write_bytes(b"".join(payload(i) + b"\n" for i in range(1, n + 1)))
    return ("application: conformance\n"
            "limits: {batch_max_events: 100, inflight_batches: 2}\n"
            "programs:\n" + program("raw", [PY, RAWRUNNER], {"WL_SLOW_MS": str(slow_ms)}) +
            program("conn", kit.argv(tmp), getattr(kit, "env", lambda t: {})(tmp)) +
            "sources:\n  in: {type: file, path: in.txt, framing: line}\n"
            "steps:\n  up: {kind: stateless, program: raw, function: upper, inputs: [in]}\n"
            "sinks:\n  out: {type: connector, program: conn, inputs: [up]}\n")


def want(n):
    return [payload(i).upper() for i in range(1, n + 1)]


def lines(path):
    return path.read_bytes().splitlines() if path.exists() else []


def wait_until(cond, what, e, timeout=60):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out waiting for %s; engine log:\n%s" % (what, e.log())
        time.sleep(0.02)


def finish(kit, e, out, n):
    """Waits for the run to end: a bounded source ends it; an endless one
    is stopped with SIGTERM once every message has come out."""
    if not getattr(kit, "bounded", True):
        wait_until(lambda: len(lines(out)) >= n, "%d outputs" % n, e, timeout=120)
        e.terminate()
    assert e.wait(timeout=120) == 0, e.log()


def assert_exactly_once(got, n):
    c = collections.Counter(got)
    dups = {k: v for k, v in c.items() if v > 1}
    missing = set(want(n)) - set(c)
    extra = set(c) - set(want(n))
    assert not missing and not dups and not extra, (
        "%d missing, %d duplicated, %d unexpected" % (len(missing), len(dups), len(extra)))


def delivered_count(kit, tmp):
    """How many outputs a sink kit has delivered so far, while the run
    goes on: its delivered_count when it has one (reading the deliveries
    would take them), else len(delivered)."""
    count = getattr(kit, "delivered_count", None)
    return count(tmp) if count else len(kit.delivered(tmp))


def spawned_pid(e, role):
    line = e.wait_for(r"SUP-SPAWN %s \w+/0 pid \d+" % role)
    return int(re.search(r"pid (\d+)", line).group(1))


# ---- sources

@pytest.mark.parametrize("kit", SOURCES, ids=ids)
def test_source_delivers_n_messages(kit, engine, tmp_path):
    kit.setup(tmp_path, N)
    e = engine(source_topology(kit, tmp_path))
    finish(kit, e, tmp_path / "out.txt", N)
    assert_exactly_once(lines(tmp_path / "out.txt"), N)
    assert e.summary()["source=in"]["events"] == str(N)


@pytest.mark.parametrize("kit", SOURCES, ids=ids)
def test_source_killed_mid_stream_resumes_without_loss_or_duplicates(kit, engine, tmp_path):
    kit.setup(tmp_path, N)
    e = engine(source_topology(kit, tmp_path))
    pid = spawned_pid(e, "source")
    out = tmp_path / "out.txt"
    wait_until(lambda: len(lines(out)) >= N // 5, "the first outputs", e)
    assert e.count("CONN-ENDED") == 0, "the source finished before the kill: raise N"
    os.kill(pid, signal.SIGKILL)
    e.wait_for(r"SUP-CRASH source in/0 pid %d was killed by signal 9" % pid)
    e.wait_for(r"CONN-READY source in/0 pid (?!%d)\d+ connected" % pid)
    finish(kit, e, out, N)
    assert_exactly_once(lines(out), N)


@pytest.mark.parametrize("kit", SOURCES, ids=ids)
def test_source_stops_cleanly_on_sigterm(kit, engine, tmp_path):
    kit.setup(tmp_path, N)
    e = engine(source_topology(kit, tmp_path))
    pid = spawned_pid(e, "source")
    out = tmp_path / "out.txt"
    wait_until(lambda: len(lines(out)) >= N // 5, "the first outputs", e)
    assert e.count("CONN-ENDED") == 0, "the source finished before the signal: raise N"
    os.kill(pid, signal.SIGTERM)
    # It says goodbye and exits 0; its streams are not ended, so the
    # engine starts it again and it goes on where the engine is.
    e.wait_for(r"CONN-GOODBYE source in/0 pid %d is leaving" % pid)
    e.wait_for(r"SUP-EXIT source in/0 pid %d exited with status 0" % pid)
    e.wait_for(r"CONN-STOPPED source in/0")
    finish(kit, e, out, N)
    assert_exactly_once(lines(out), N)


# ---- sinks

@pytest.mark.parametrize("kit", SINKS, ids=ids)
def test_sink_delivers_n_messages(kit, engine, tmp_path):
    kit.setup(tmp_path, N)
    e = engine(sink_topology(kit, tmp_path, N))
    assert e.wait(timeout=120) == 0, e.log()
    assert kit.delivered(tmp_path) == want(N)


@pytest.mark.parametrize("kit", SINKS, ids=ids)
def test_sink_killed_mid_stream_loses_nothing(kit, engine, tmp_path):
    kit.setup(tmp_path, N)
    e = engine(sink_topology(kit, tmp_path, N, slow_ms=0.15))
    pid = spawned_pid(e, "sink")
    wait_until(lambda: delivered_count(kit, tmp_path) >= N // 5, "the first deliveries", e)
    os.kill(pid, signal.SIGKILL)
    e.wait_for(r"SUP-CRASH sink out/0 pid %d was killed by signal 9" % pid)
    assert e.wait(timeout=120) == 0, e.log()
    got = kit.delivered(tmp_path)
    assert set(got) == set(want(N)), "lost outputs"
    if not kit.at_least_once:
        assert_exactly_once(got, N)


@pytest.mark.parametrize("kit", SINKS, ids=ids)
def test_sink_stops_cleanly_on_sigterm(kit, engine, tmp_path):
    kit.setup(tmp_path, N)
    e = engine(sink_topology(kit, tmp_path, N, slow_ms=0.15))
    pid = spawned_pid(e, "sink")
    wait_until(lambda: delivered_count(kit, tmp_path) >= N // 5, "the first deliveries", e)
    os.kill(pid, signal.SIGTERM)
    e.wait_for(r"CONN-GOODBYE sink out/0 pid %d is leaving" % pid)
    e.wait_for(r"SUP-EXIT sink out/0 pid %d exited with status 0" % pid)
    assert e.wait(timeout=120) == 0, e.log()
    got = kit.delivered(tmp_path)
    # A clean stop answers only what it delivered: nothing is sent twice.
    assert_exactly_once(got, N)


# ---- both

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("kit", KITS, ids=ids)
def test_connector_with_a_wrong_token_is_refused_and_says_why(kit, engine, tmp_path, monkeypatch):
    kit.setup(tmp_path, 10)
    port = free_port()
    address = "tcp://127.0.0.1:%d" % port
    monkeypatch.setenv("WL_CONFORMANCE_TOKEN", "the-right-token")
    io = "{type: connector, listen: '%s', token_env: WL_CONFORMANCE_TOKEN}" % address
    if kit.role == "source":
        topo = ("application: conformance\nprograms:\n" + program("raw", [PY, RAWRUNNER]) +
                "sources:\n  in: %s\n" % io +
                "steps:\n  up: {kind: stateless, program: raw, function: upper, inputs: [in]}\n"
                "sinks:\n  out: {type: file, path: out.txt, framing: line, inputs: [up]}\n")
    else:
        (tmp_path / "in.txt").write_bytes(b"x\n")
        topo = ("application: conformance\nprograms:\n" + program("raw", [PY, RAWRUNNER]) +
                "sources:\n  in: {type: file, path: in.txt, framing: line}\n"
                "steps:\n  up: {kind: stateless, program: raw, function: upper, inputs: [in]}\n"
                "sinks:\n  out: %s\n" % io.replace("}", ", inputs: [up]}"))
    e = engine(topo)
    e.wait_for(r"CONN-LISTEN %s \w+/0: waiting for a connector on %s" % (kit.role, re.escape(address)))
    env = dict(os.environ, WL_WRONG="not-the-token")
    env.pop("WL_CONFORMANCE_TOKEN")
    p = subprocess.run(kit.accepted(tmp_path, address, "WL_WRONG"), cwd=str(tmp_path), env=env,
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 3, (p.returncode, p.stderr)
    assert re.search(r"(?i)refused.*token", p.stderr), p.stderr
    e.wait_for(r"CONN-REFUSED %s \w+/0: wrong token in hello" % kit.role)
    # The address keeps serving: the right token gets in and the work gets
    # done (a sink lets the engine drain; a source is stopped by SIGTERM).
    env["WL_RIGHT"] = "the-right-token"
    right = subprocess.Popen(kit.accepted(tmp_path, address, "WL_RIGHT"), cwd=str(tmp_path),
                             env=env, stderr=subprocess.PIPE, text=True)
    try:
        e.wait_for(r"CONN-READY %s \w+/0" % kit.role)
        if kit.role == "source":
            e.terminate()
        assert e.wait() == 0, e.log()
        assert right.wait(timeout=30) == 0
    finally:
        if right.poll() is None:
            right.kill()
        right.wait()

