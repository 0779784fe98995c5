"""Programs with `priority: realtime`: the engine starts them under
SCHED_FIFO when the kernel lets it, says so when it does not, and puts a
real-time runner that keeps a CPU busy back to the normal class
(engine/prio.h). Each runner reports the class it ran in for every event."""
import os
import subprocess
import sys

import pytest

from conftest import ROOT

RUNNER = '''
import os
import time

import wallaroo

NAMES = {os.SCHED_OTHER: "other", os.SCHED_FIFO: "fifo"}


def spin(seconds):
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def tag(data):
    # "crash": the first time, the process dies (the engine restarts it).
    if data == b"crash" and not os.path.exists("crashed"):
        open("crashed", "w").close()
        os._exit(3)
    # "spin": keep the CPU busy for a while first, as a runaway loop would.
    if data == b"spin":
        spin(float(os.environ.get("SPIN_S", "0")))
    return data + b" " + NAMES.get(os.sched_getscheduler(0), "?").encode()


if __name__ == "__main__":
    # A start-up as heavy as importing a big library.
    spin(float(os.environ.get("START_SPIN_S", "0")))
    steps = wallaroo.Steps()
    steps.computation("%s", tag)
    wallaroo.run(steps)
'''


def realtime_permitted():
    """Whether a process started as this test's processes are may move to
    SCHED_FIFO (root, CAP_SYS_NICE or RLIMIT_RTPRIO): asked of a child."""
    probe = ("import os; os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))")
    return subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode == 0


def topology(first="", second="", spin_s=0, start_spin_s=0):
    """Two programs in a row: `rt` serves step `first-tag`, `plain` step
    `second-tag`; each appends the class it ran in to every event."""
    env = "{PYTHONPATH: %s/sdk-python, SPIN_S: '%s', START_SPIN_S: '%s'}" % (
        ROOT, spin_s, start_spin_s)
    return ("application: prio\nprograms:\n"
            "  rt: {argv: [%s, first.py], env: %s%s}\n"
            "  plain: {argv: [%s, second.py], env: %s%s}\n"
            "sources:\n  in: {type: file, path: in.txt, framing: line}\n"
            "steps:\n"
            "  first-tag: {kind: stateless, program: rt, inputs: [in]}\n"
            "  second-tag: {kind: stateless, program: plain, inputs: [first-tag]}\n"
            "sinks:\n  out: {type: file, path: out.txt, framing: line, inputs: [second-tag]}\n"
            % (sys.executable, env, first, sys.executable, env, second))


def write_runners(tmp_path):
    (tmp_path / "first.py").write_text(RUNNER % "first-tag")
    (tmp_path / "second.py").write_text(RUNNER % "second-tag")


def realtime_runners(tmp_path):
    """write_runners, for a test that needs real-time priority granted."""
    if not realtime_permitted():
        pytest.skip("real-time priority is not permitted to this user")
    write_runners(tmp_path)


def test_a_realtime_program_runs_at_realtime_priority_and_others_do_not(engine, tmp_path):
    write_runners(tmp_path)
    (tmp_path / "in.txt").write_text("a\nb\nc\n")
    e = engine(topology(first=", priority: realtime", second=", priority: normal"))
    assert e.wait() == 0, e.log()
    out = sorted((tmp_path / "out.txt").read_text().splitlines())
    if realtime_permitted():
        assert out == ["a fifo other", "b fifo other", "c fifo other"]
        assert e.count("SUP-PRIORITY") == 0, e.log()
    else:  # the kernel refuses: the program runs all the same, and the log says why
        assert out == ["a other other", "b other other", "c other other"]
        e.wait_for(r"SUP-PRIORITY runner rt/0: cannot run at real-time priority: "
                   r"Operation not permitted \(it needs root, CAP_SYS_NICE")


def test_a_refused_realtime_priority_is_logged_once_and_the_program_runs_normally(
        engine, tmp_path):
    write_runners(tmp_path)
    (tmp_path / "in.txt").write_text("a\ncrash\nb\n")
    wrap = ()
    if os.geteuid() == 0:
        # Root may do it: run the engine without the capability that lets it.
        wrap = ("setpriv", "--inh-caps=-sys_nice", "--bounding-set=-sys_nice", "--")
    elif realtime_permitted():
        pytest.skip("this user may use real-time priority (RLIMIT_RTPRIO) and cannot give it up")
    # The runner crashes once, and its second incarnation is refused as
    # well: still one log line.
    e = engine(topology(first=", priority: realtime"), wrap=wrap)
    assert e.wait() == 0, e.log()
    assert sorted((tmp_path / "out.txt").read_text().splitlines()) == [
        "a other other", "b other other", "crash other other"]
    e.wait_for(r"SUP-SPAWN runner rt/0 pid \d+: .* \(incarnation 2\)")
    assert e.count(r"SUP-PRIORITY runner rt/0: cannot run at real-time priority: "
                   r"Operation not permitted \(it needs root, CAP_SYS_NICE or an "
                   r"RLIMIT_RTPRIO of 1 or more\); runs at normal priority") == 1, e.log()


def test_a_realtime_runner_that_keeps_a_cpu_busy_goes_back_to_normal(engine, tmp_path):
    realtime_runners(tmp_path)
    # "spin" holds its runner's CPU for 2.5 s: past the 1 s window at
    # over 80% of a CPU, the engine moves it back; the events after it
    # run in the normal class.
    (tmp_path / "in.txt").write_text("before\nspin\nafter\n")
    e = engine(topology(first=", priority: realtime", spin_s=2.5))
    line = e.wait_for(r"SUP-PRIORITY runner rt/0 pid \d+ used (\d+)% of a CPU over 1\.0 s: "
                      r"back to normal priority \(\d+ thread\(s\)\), so that it cannot starve "
                      r"the engine", timeout=30)
    assert e.wait() == 0, e.log()
    out = (tmp_path / "out.txt").read_text().splitlines()
    assert out == ["before fifo other", "spin other other", "after other other"], out
    assert int(line.split(" used ")[1].split("%")[0]) > 80


def test_a_realtime_program_is_moved_once_ready_so_its_start_up_is_not_busy(engine, tmp_path):
    realtime_runners(tmp_path)
    (tmp_path / "in.txt").write_text("a\nb\n")
    # 1.5 s of CPU before it says Ready: busy by the watch's measure, had
    # the watch started at fork; it starts at Ready, when the class changes.
    e = engine(topology(first=", priority: realtime", start_spin_s=1.5))
    assert e.wait() == 0, e.log()
    assert sorted((tmp_path / "out.txt").read_text().splitlines()) == [
        "a fifo other", "b fifo other"]
    assert e.count("SUP-PRIORITY") == 0, e.log()
