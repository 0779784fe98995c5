"""The wall clock stepped under a running engine (NTP, an operator, a
resumed virtual machine) changes nothing it supervises: it measures
deadlines on the monotonic clock. timejump.c, preloaded into the engine,
steps the wall clock it sees once a file appears."""
import os
import shutil
import socket
import subprocess

import pytest

from conftest import ROOT
from test_io import frame, listen_port, read_frames, tcp_upper_topology


@pytest.fixture
def timejump(tmp_path):
    """(environment for the engine, the file whose creation steps its
    wall clock); the step is set with TIMEJUMP_SECONDS."""
    cc = shutil.which("cc") or shutil.which("gcc")
    assert cc, "no C compiler to build tests/engine/timejump.c"
    lib = tmp_path / "timejump.so"
    subprocess.run([cc, "-shared", "-fPIC", "-O2", "-o", str(lib),
                    os.path.join(ROOT, "tests", "engine", "timejump.c"), "-ldl"], check=True)
    trigger = tmp_path / "jump-now"
    env = {"LD_PRELOAD": str(lib), "TIMEJUMP_FILE": str(trigger)}
    # A sanitizer build of the engine wants its runtime loaded first.
    asan = os.environ.get("ASAN_OPTIONS")
    env["ASAN_OPTIONS"] = (asan + ":" if asan else "") + "verify_asan_link_order=0"
    return env, trigger


def topology(**runner_env):
    return tcp_upper_topology(instances=1, **runner_env).replace(
        "application: tcp\n", "application: tcp\nlimits: {batch_deadline_ms: 1500}\n")


def send_and_wait(e, payload, sent_before):
    """One client sends one frame and leaves; returns once the source has
    read it (the batch goes to the runner in that turn of the loop)."""
    with socket.create_connection(("127.0.0.1", listen_port(e))) as c:
        c.sendall(frame(payload))
    e.wait_count(r"SRC-CLOSE source 'in' peer .* closed after 1 events", sent_before + 1)


def test_a_wall_clock_set_back_an_hour_does_not_hide_a_hung_runner(engine, tmp_path, timejump):
    env, trigger = timejump
    e = engine(topology(WL_FAULT="hang", WL_FAULT_MARKER=str(tmp_path / "hung")),
               env=dict(env, TIMEJUMP_SECONDS="-3600"))
    e.wait_for("READY")
    send_and_wait(e, b"hello", 0)
    trigger.touch()
    # Measured on the wall clock, the batch would now have been sent an
    # hour from now, and the runner would not look hung for an hour.
    e.wait_for(r"RUN-HUNG runner raw/0 pid \d+: no reply to a batch within batch_deadline_ms=1500")
    e.wait_count(r"RUN-READY runner raw/0 pid \d+", 2)  # the replacement
    e.terminate()
    assert e.wait() == 0
    assert read_frames((tmp_path / "out.bin").read_bytes()) == [b"HELLO"]


def test_a_wall_clock_set_forward_an_hour_kills_no_runner(engine, tmp_path, timejump):
    env, trigger = timejump
    # Each event takes the runner 1 s; the wall clock jumps while the
    # first is being computed.
    e = engine(topology(WL_SLOW_MS="1000"), env=dict(env, TIMEJUMP_SECONDS="3600"))
    e.wait_for("READY")
    send_and_wait(e, b"one", 0)
    trigger.touch()
    send_and_wait(e, b"two", 1)
    e.terminate()
    assert e.wait() == 0
    # Measured on the wall clock, the batch in flight would have been an
    # hour late, and the runner killed as hung.
    assert e.count("RUN-HUNG") == 0, e.log()
    assert e.count("SUP-SPAWN") == 1, e.log()
    assert sorted(read_frames((tmp_path / "out.bin").read_bytes())) == [b"ONE", b"TWO"]
