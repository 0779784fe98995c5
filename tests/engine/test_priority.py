"""Program priorities: `realtime` runs a program's processes under
SCHED_FIFO when the kernel lets the engine, and says so when it does not;
`auto`, the default, does the same when the engine is permitted and runs
them normally, said once, when it is not; `normal` never. A real-time
runner that keeps a CPU busy goes back to the normal class, and what it
starts starts normal (engine/prio.h). Each runner reports the class it ran
in for every event. The top-level `priority` does the same for the
engine's own loop thread, which the runners report too (their parent)."""
import os
import re
import socket
import subprocess
import sys
import threading

import pytest

from conftest import ROOT

RUNNER = '''
import os
import subprocess
import sys
import threading
import time

import wallaroo

NAMES = {os.SCHED_OTHER: "other", os.SCHED_FIFO: "fifo"}


def klass():
    # The engine sets SCHED_RESET_ON_FORK with SCHED_FIFO: not a class.
    return NAMES.get(os.sched_getscheduler(0) & ~os.SCHED_RESET_ON_FORK, "?")


def later_thread_class():
    # A thread started now, after the engine moved this process, starts
    # normal; the engine's watch moves it at the end of a calm window and
    # says so, and the test then opens the pipe this thread waits on.
    seen = []

    def look():
        with open("moved.fifo", "rb") as f:
            f.read()
        seen.append(klass())

    t = threading.Thread(target=look)
    t.start()
    t.join()
    return seen[0]


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
    # "child": the class of a process it starts, not its own.
    if data == b"child":
        probe = "import os; print(os.sched_getscheduler(0) & ~os.SCHED_RESET_ON_FORK)"
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True,
                             check=True).stdout
        return data + b" " + NAMES.get(int(out), "?").encode()
    # "thread": the class of a thread it starts now, once the engine moved it.
    if data == b"thread":
        return data + b" " + later_thread_class().encode()
    # "engine": the class of the engine's loop thread (this process's parent).
    if data == b"engine":
        cls = os.sched_getscheduler(os.getppid()) & ~os.SCHED_RESET_ON_FORK
        return data + b" " + NAMES.get(cls, "?").encode()
    return data + b" " + klass().encode()


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


def topology(first="", second=", priority: normal", spin_s=0, start_spin_s=0):
    """Two programs in a row: `rt` serves step `first-tag`, `plain` step
    `second-tag`; each appends the class it ran in to every event. `first`
    and `second` go into their program's map (leave `first` empty for the
    default)."""
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


def run(engine, tmp_path, lines, topo, wrap=()):
    """Runs `topo` over the events `lines` to its end; returns the engine
    and the sorted outputs."""
    (tmp_path / "in.txt").write_text("".join(line + "\n" for line in lines))
    e = engine(topo, wrap=wrap)
    assert e.wait() == 0, e.log()
    return e, sorted((tmp_path / "out.txt").read_text().splitlines())


# The log lines about programs, leaving out the engine's own.
PROGRAM_LINES = r"SUP-PRIORITY (program|runner)"


def realtime_runners(tmp_path):
    """write_runners, for a test that needs real-time priority granted."""
    if not realtime_permitted():
        pytest.skip("real-time priority is not permitted to this user")
    write_runners(tmp_path)


def test_a_realtime_program_runs_at_realtime_priority_and_others_do_not(engine, tmp_path):
    write_runners(tmp_path)
    e, out = run(engine, tmp_path, ["a", "b", "c"], topology(first=", priority: realtime"))
    if realtime_permitted():
        assert out == ["a fifo other", "b fifo other", "c fifo other"]
        assert e.count(PROGRAM_LINES) == 0, e.log()
    else:  # the kernel refuses: the program runs all the same, and the log says why
        assert out == ["a other other", "b other other", "c other other"]
        e.wait_for(r"SUP-PRIORITY runner rt/0: cannot run at real-time priority: "
                   r"Operation not permitted \(it needs root, CAP_SYS_NICE")


def refusing_wrap():
    """The argv prefix that starts the engine without the right to give
    real-time priority."""
    if os.geteuid() == 0:
        # Root may do it: run the engine without the capability that lets it.
        return ("setpriv", "--inh-caps=-sys_nice", "--bounding-set=-sys_nice", "--")
    if realtime_permitted():
        pytest.skip("this user may use real-time priority (RLIMIT_RTPRIO) and cannot give it up")
    return ()


def test_by_default_a_program_runs_at_realtime_priority_when_the_engine_may_give_it(
        engine, tmp_path):
    realtime_runners(tmp_path)
    e, out = run(engine, tmp_path, ["a", "b"], topology())
    assert out == ["a fifo other", "b fifo other"]
    # Said once, at start, naming the programs left to the default only.
    assert e.count(r"SUP-PRIORITY program\(s\) 'rt': real-time priority once ready, "
                   r"while not busy \(priority: auto, and this engine may give it; "
                   r"priority: normal turns it off\)") == 1, e.log()
    assert e.count(PROGRAM_LINES) == 1, e.log()


def test_what_a_realtime_program_starts_starts_normal_and_its_threads_are_moved(
        engine, tmp_path):
    realtime_runners(tmp_path)
    # A process it starts is not watched, so it must not be real-time; a
    # thread it starts is, and is moved at the end of the watch's window.
    os.mkfifo(tmp_path / "moved.fifo")
    (tmp_path / "in.txt").write_text("child\nthread\nafter\n")
    e = engine(topology(first=", priority: realtime"))
    e.wait_for(r"SUP-PRIORITY runner rt/0 pid \d+: 1 thread\(s\) it started since moved "
               r"to real-time priority")
    with open(tmp_path / "moved.fifo", "wb") as f:
        f.write(b"go")
    assert e.wait() == 0, e.log()
    assert sorted((tmp_path / "out.txt").read_text().splitlines()) == [
        "after fifo other", "child other other", "thread fifo other"]
    assert e.count(PROGRAM_LINES) == 1, e.log()


# Where the engine may not give real-time priority: under `auto` (both
# programs) the engine says so once at start and tries nothing; under
# `realtime` the kernel refuses and the slot says so, once although its
# runner crashes and its second incarnation is refused as well.
REFUSALS = {
    "auto": ("", "", r"SUP-PRIORITY program\(s\) 'rt', 'plain': normal priority \(priority: "
             r"auto, and this engine may not give real-time priority: that needs root, "
             r"CAP_SYS_NICE or an RLIMIT_RTPRIO of 1 or more\)"),
    "realtime": (", priority: realtime", ", priority: normal",
                 r"SUP-PRIORITY runner rt/0: cannot run at real-time priority: Operation not "
                 r"permitted \(it needs root, CAP_SYS_NICE or an RLIMIT_RTPRIO of 1 or "
                 r"more\); runs at normal priority"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_where_realtime_priority_is_not_permitted_programs_run_normally_said_once(
        engine, tmp_path, case):
    first, second, said = REFUSALS[case]
    write_runners(tmp_path)
    e, out = run(engine, tmp_path, ["a", "crash", "b"], topology(first, second),
                 wrap=refusing_wrap())
    assert out == ["a other other", "b other other", "crash other other"]
    e.wait_for(r"SUP-SPAWN runner rt/0 pid \d+: .* \(incarnation 2\)")
    assert e.count(said) == 1, e.log()
    assert e.count(PROGRAM_LINES) == 1, e.log()


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
    # 1.5 s of CPU before it says Ready: busy by the watch's measure, had
    # the watch started at fork; it starts at Ready, when the class changes.
    e, out = run(engine, tmp_path, ["a", "b"],
                 topology(first=", priority: realtime", start_spin_s=1.5))
    assert out == ["a fifo other", "b fifo other"]
    assert e.count(PROGRAM_LINES) == 0, e.log()


ENGINE_AUTO = (r"SUP-PRIORITY engine: real-time priority while not busy \(priority: auto at "
               r"the top level, and this engine may take it; priority: normal turns it off\)")


def test_by_default_the_engine_runs_at_realtime_priority_when_it_may(engine, tmp_path):
    realtime_runners(tmp_path)
    e, out = run(engine, tmp_path, ["engine"], topology())
    assert out == ["engine fifo other"]
    assert e.count(ENGINE_AUTO) == 1, e.log()
    assert e.count("SUP-PRIORITY engine") == 1, e.log()


def test_priority_normal_at_the_top_level_keeps_the_engine_normal(engine, tmp_path):
    write_runners(tmp_path)
    e, out = run(engine, tmp_path, ["engine"], "priority: normal\n" + topology())
    assert out == ["engine other other"]
    assert e.count("SUP-PRIORITY engine") == 0, e.log()


# Where the engine may not take real-time priority itself: `auto` says so
# once at start; `realtime` is refused by the kernel, said once.
ENGINE_REFUSALS = {
    "auto": r"SUP-PRIORITY engine: normal priority \(priority: auto at the top level, and "
            r"this engine may not take real-time priority: that needs root, CAP_SYS_NICE "
            r"or an RLIMIT_RTPRIO of 1 or more\)",
    "realtime": r"SUP-PRIORITY engine: cannot run at real-time priority: Operation not "
                r"permitted \(it needs root, CAP_SYS_NICE or an RLIMIT_RTPRIO of 1 or "
                r"more\); runs at normal priority",
}


@pytest.mark.parametrize("case", sorted(ENGINE_REFUSALS))
def test_where_the_engine_may_not_take_realtime_priority_it_runs_normally_said_once(
        engine, tmp_path, case):
    write_runners(tmp_path)
    e, out = run(engine, tmp_path, ["engine", "crash"],
                 "priority: %s\n" % case + topology(), wrap=refusing_wrap())
    assert out == ["crash other other", "engine other other"]
    assert e.count(ENGINE_REFUSALS[case]) == 1, e.log()
    assert e.count("SUP-PRIORITY engine") == 1, e.log()


def test_a_realtime_engine_that_keeps_a_cpu_busy_goes_back_to_normal(engine, tmp_path):
    if not realtime_permitted():
        pytest.skip("real-time priority is not permitted to this user")
    # A source fed as fast as this test can write, straight to a sink:
    # the engine's loop is busy for as long as the feeding lasts.
    e = engine("application: busy\npriority: realtime\n"
               "sources:\n  in: {type: tcp, listen: '127.0.0.1:0', framing: line}\n"
               "sinks:\n  out: {type: file, path: /dev/null, framing: line, inputs: [in]}\n")
    port = int(re.search(r":(\d+)$", e.wait_for(
        r"SRC-LISTEN source 'in' listening on 127.0.0.1:\d+")).group(1))
    e.wait_for(r" READY ")
    assert os.sched_getscheduler(e.proc.pid) == os.SCHED_FIFO | os.SCHED_RESET_ON_FORK
    stop = threading.Event()

    def feed():
        chunk = b"event\n" * 100000
        with socket.create_connection(("127.0.0.1", port)) as s:
            while not stop.is_set():
                s.sendall(chunk)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        line = e.wait_for(r"SUP-PRIORITY engine used (\d+)% of a CPU over 1\.0 s: back to "
                          r"normal priority for good, so that it cannot starve the machine",
                          timeout=60)
        assert (os.sched_getscheduler(e.proc.pid) & ~os.SCHED_RESET_ON_FORK) == os.SCHED_OTHER
    finally:
        stop.set()
        feeder.join(10)
    e.terminate()
    assert e.wait() == 0, e.log()
    assert int(line.split(" used ")[1].split("%")[0]) > 80
