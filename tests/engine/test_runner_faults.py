"""The engine supervises runners: a runner that crashes, hangs, sends
garbage, sends a frame over the size limit or breaks the protocol is
replaced, its in-flight batches go to the replacement, and every accepted
event is applied exactly once (the per-key counters prove it)."""
import collections
import os
import signal
import socket
import sys
import time

import pytest

from conftest import RAWRUNNER, raw_program

FAST_LIMITS = ("limits: {batch_deadline_ms: 1500, heartbeat_ms: 200, "
               "heartbeat_timeout_ms: 1000, message_max_bytes: 65536, "
               "restart_backoff_ms: 50}\n")


def counting_topology(program, limits=FAST_LIMITS):
    return ("application: faults\n" + limits +
            "programs:\n" + program +
            "sources:\n  lines: {type: file, path: in.txt, framing: line}\n"
            "steps:\n"
            "  key: {kind: key_by, program: raw, function: first-word, inputs: [lines]}\n"
            "  cnt: {kind: state, program: raw, function: count, state: counts, inputs: [key]}\n"
            "sinks:\n  out: {type: file, path: out.txt, framing: line, inputs: [cnt]}\n")


def write_input(tmp_path, keys=7, n=20000):
    lines = ["k%d payload %d" % (i % keys, i) for i in range(n)]
    (tmp_path / "in.txt").write_text("\n".join(lines) + "\n")
    return collections.Counter(line.split()[0] for line in lines)


def check_exactly_once(tmp_path, expected):
    """Each key's outputs must be exactly key:1, key:2, ... key:n in order."""
    seen = collections.defaultdict(list)
    for line in (tmp_path / "out.txt").read_text().splitlines():
        key, count = line.rsplit(":", 1)
        seen[key].append(int(count))
    assert set(seen) == set(expected)
    for key, n in expected.items():
        assert seen[key] == list(range(1, n + 1)), "key %s: lost, duplicated or reordered" % key


@pytest.mark.parametrize("fault,tag", [
    ("crash", r"SUP-CRASH runner raw/\d pid \d+ exited with status 3"),
    ("hang", r"RUN-HUNG runner raw/\d pid \d+: no reply to a batch within batch_deadline_ms=1500"),
    ("garbage", r"RUN-GARBAGE runner raw/\d pid \d+: sent \d+ bytes that are not a protocol frame"),
    ("oversize", r"RUN-DISCONNECT runner raw/\d pid \d+: connection closed .*message_max_bytes=65536"),
    ("badreply", r"RUN-PROTO runner raw/\d: reply for the wrong batch"),
    ("badstate", r"RUN-PROTO runner raw/\d: (reply sets the state of key|state in a reply)"),
])
def test_misbehaving_runner_is_replaced_and_nothing_is_lost(engine, tmp_path, fault, tag):
    expected = write_input(tmp_path)
    e = engine(counting_topology(raw_program(
        WL_FAULT=fault, WL_FAULT_MARKER=str(tmp_path / "marker"), WL_FAULT_AFTER=3)))
    assert e.wait() == 0, e.log()
    e.wait_for(tag, timeout=1)
    e.wait_for(r"RUN-READY runner raw/\d pid \d+ serves", timeout=1)
    assert e.count(r"SUP-RESTART runner raw/\d") >= 1
    check_exactly_once(tmp_path, expected)
    s = e.summary()
    assert s["application"]["events_in"] == str(sum(expected.values()))
    assert s["application"]["errors"] == "0"


def test_runner_stopped_by_sigstop_is_detected_by_heartbeat(engine, tmp_path):
    # A TCP source keeps the engine up while the runners sit idle.
    e = engine("application: hb\n" + FAST_LIMITS + "programs:\n" + raw_program(instances=1) +
               "sources:\n  in: {type: tcp, listen: '127.0.0.1:0'}\n"
               "steps:\n  up: {kind: stateless, program: raw, function: upper, inputs: [in]}\n"
               "sinks:\n  out: {type: file, path: out.txt, inputs: [up]}\n")
    line = e.wait_for(r"SUP-SPAWN runner raw/0 pid (\d+)")
    pid = int(line.split(" pid ")[1].split(":")[0])
    e.wait_for(r"READY application")
    os.kill(pid, signal.SIGSTOP)
    e.wait_for(r"RUN-HUNG runner raw/0 pid %d: no heartbeat answer within heartbeat_timeout_ms=1000" % pid)
    e.wait_for(r"RUN-READY runner raw/0 pid (?!%d)\d+" % pid)
    e.terminate()
    assert e.wait() == 0


def test_poison_batch_fails_its_events_instead_of_killing_runners_forever(engine, tmp_path):
    (tmp_path / "in.txt").write_text("k1 a\nk2 b\nk3 c\n")
    # Every incarnation crashes on its first batch: the batch can never pass.
    e = engine("application: poison\n" + FAST_LIMITS + "programs:\n" +
               raw_program(instances=1, WL_FAULT="crash", WL_FAULT_MARKER="always", WL_FAULT_AFTER=1) +
               "sources:\n  in: {type: file, path: in.txt, framing: line}\n"
               "steps:\n  up: {kind: stateless, program: raw, function: upper, inputs: [in]}\n"
               "sinks:\n  out: {type: file, path: out.txt, framing: line, inputs: [up]}\n")
    assert e.wait() == 0, e.log()
    e.wait_for(r"BATCH-FAILED step 'up': batch \d+ of 3 events was in flight in 3 runner incarnations")
    assert e.count(r"SUP-CRASH runner raw/0") == 3
    assert e.summary()["step=up"]["errors"] == "3"
    assert (tmp_path / "out.txt").read_text() == ""


def test_runner_failing_a_whole_batch_fails_its_events_and_goes_on(engine, tmp_path):
    (tmp_path / "in.txt").write_text("a\nb\n")
    e = engine("application: batcherr\nprograms:\n" +
               raw_program(instances=1, WL_FAULT="batcherror", WL_FAULT_MARKER=str(tmp_path / "m")) +
               "sources:\n  in: {type: file, path: in.txt, framing: line}\n"
               "steps:\n  up: {kind: stateless, program: raw, function: upper, inputs: [in]}\n"
               "sinks:\n  out: {type: file, path: out.txt, framing: line, inputs: [up]}\n")
    assert e.wait() == 0, e.log()
    e.wait_for(r"RUN-ERROR runner raw/0 reported an error \(code 5\): reply of 99999999 bytes")
    e.wait_for(r"STEP-ERROR step 'up' key '' \(stream 1 message 1\): runner raw/0 failed the whole batch")
    assert e.summary()["step=up"]["errors"] == "2"
    assert e.count("SUP-CRASH") == 0


def test_per_event_error_names_step_and_key_and_others_pass(engine, tmp_path):
    (tmp_path / "in.txt").write_text("good\nbad\nfine\n")
    e = engine("application: errs\nprograms:\n" + raw_program(instances=1) +
               "sources:\n  in: {type: file, path: in.txt, framing: line}\n"
               "steps:\n  check: {kind: stateless, program: raw, function: fail-bad, inputs: [in]}\n"
               "sinks:\n  out: {type: file, path: out.txt, framing: line, inputs: [check]}\n")
    assert e.wait() == 0
    e.wait_for(r"STEP-ERROR step 'check' key '' \(stream 1 message 2\): step 'check' key b'': ValueError: bad input")
    assert (tmp_path / "out.txt").read_text() == "good\nfine\n"
    assert e.summary()["application"]["errors"] == "1"


def test_runner_with_wrong_protocol_version_is_refused_then_engine_gives_up(engine, tmp_path):
    write_input(tmp_path, n=10)
    e = engine(counting_topology(raw_program(instances=1, WL_VERSION_MAJOR=9)))
    assert e.wait() == 1
    e.wait_for(r"RUN-REFUSED runner raw/0 pid \d+: protocol version 9.0 is not supported")
    e.wait_for(r"SUP-GIVEUP runner raw/0 failed 5 times in a row without becoming ready")


def test_runner_with_wrong_token_is_refused(engine, tmp_path):
    write_input(tmp_path, n=10)
    e = engine(counting_topology(raw_program(instances=1, WL_TOKEN_OVERRIDE="0123")))
    assert e.wait() == 1
    e.wait_for(r"RUN-REFUSED runner raw/0 pid \d+: wrong token in hello")


def test_program_that_cannot_be_executed_makes_the_engine_exit_1(engine, tmp_path):
    write_input(tmp_path, n=10)
    e = engine(counting_topology("  raw:\n    argv: [/nonexistent/runner]\n"))
    assert e.wait() == 1
    e.wait_for(r"SUP-EXEC runner raw/0: cannot execute /nonexistent/runner: No such file or directory")
    e.wait_for(r"SUP-CRASH runner raw/0 pid \d+ exited with status 127")
    e.wait_for(r"SUP-GIVEUP runner raw/0")


def test_program_whose_directory_is_missing_is_named(engine, tmp_path):
    write_input(tmp_path, n=10)
    e = engine(counting_topology("  raw:\n    argv: [%s, %s]\n    cwd: no-such-dir\n"
                                 % (sys.executable, RAWRUNNER)))
    assert e.wait() == 1
    e.wait_for(r"SUP-EXEC runner raw/0: cannot change to its directory \S+/no-such-dir: "
               r"No such file or directory")
    e.wait_for(r"SUP-CRASH runner raw/0 pid \d+ exited with status 126")


def test_event_too_large_for_a_message_fails_alone_with_a_clear_error(engine, tmp_path):
    # first-word makes the whole 1500-byte line the key as well: key plus
    # payload no longer fit in message_max_bytes=2048 for the next step.
    (tmp_path / "in.txt").write_text("small one\n" + "x" * 1500 + "\nsmall two\n")
    e = engine("application: big\nlimits: {message_max_bytes: 2048}\nprograms:\n" +
               raw_program(instances=1) +
               "sources:\n  in: {type: file, path: in.txt, framing: line, max_frame_bytes: 1600}\n"
               "steps:\n  key: {kind: key_by, program: raw, function: first-word, inputs: [in]}\n"
               "  cnt: {kind: state, program: raw, function: count, state: c, inputs: [key]}\n"
               "sinks:\n  out: {type: file, path: out.txt, framing: line, inputs: [cnt]}\n")
    assert e.wait() == 0, e.log()
    e.wait_for(r"BATCH-FAILED step 'cnt': the batch encodes to \d+ bytes, over message_max_bytes=2048")
    assert sorted((tmp_path / "out.txt").read_text().split()) == ["small:1", "small:2"]
    assert e.summary()["step=cnt"]["errors"] == "1"
    assert e.count("SUP-CRASH") == 0


@pytest.mark.parametrize("seed", range(1, 9))
def test_runner_sending_damaged_replies_never_takes_the_engine_down(engine, tmp_path, seed):
    """One reply in 33 arrives damaged at random (a seeded mutation of
    the real reply: bits flipped, cut short, bytes spliced in or out). The
    engine refuses each one it cannot use, naming the runner, replaces the
    runner and sends the batch again; it never crashes and accounts for
    every input. (A damaged reply can still be a valid one with other
    content, so exact outputs are not asserted here.)"""
    expected = write_input(tmp_path, n=3000)
    # Small batches: about 400 replies, about a dozen damaged.
    limits = FAST_LIMITS.replace("limits: {", "limits: {batch_max_events: 16, ")
    e = engine(counting_topology(raw_program(
        WL_FAULT="mutate", WL_MUTATE_SEED=seed, WL_MUTATE_P=0.03,
        WL_FAULT_MARKER=str(tmp_path / "start")),
        limits))
    assert e.wait(120) == 0, e.log()
    refused = e.count(r"RUN-(GARBAGE|PROTO) runner raw/\d")
    assert refused >= 1, e.log()
    assert e.count(r"SUP-RESTART runner raw/\d") >= 1
    s = e.summary()
    assert s["application"]["events_in"] == str(sum(expected.values()))
    assert (tmp_path / "out.txt").read_bytes().count(b"\n") >= sum(expected.values()) // 2


def count_pipeline(source):
    """The YAML of a count step fed by `source` (lines keyed by their first
    4 bytes), on the raw program, writing out.txt."""
    return ("steps:\n"
            "  key: {kind: key_by, key: {offset: 0, length: 4}, inputs: [%s]}\n"
            "  cnt: {kind: state, program: raw, function: count, state: counts, "
            "inputs: [key]}\n"
            "sinks:\n  out: {type: file, path: out.txt, framing: line, inputs: [cnt]}\n"
            % source)


def write_keyed_lines(tmp_path, keys, per_key):
    """Writes in.txt, `keys` keys x `per_key` lines interleaved; returns the
    expected count per key."""
    lines = ["k%03d %d" % (i % keys, i) for i in range(keys * per_key)]
    (tmp_path / "in.txt").write_text("\n".join(lines) + "\n")
    return collections.Counter(line.split()[0] for line in lines)


def stall_topology(tmp_path, keys, per_key, fault, after, instance):
    """200 keys x 20 events through a count step on two raw runners, one
    of which hangs (until tmp_path/release exists) as its fault says;
    returns the topology and the expected counts. Instance 0 is the count
    step's home: every event is queued for it."""
    expected = write_keyed_lines(tmp_path, keys, per_key)
    topology = ("application: steal\n"
                "limits: {batch_max_events: 4, inflight_batches: 4, heartbeat_ms: 200, "
                "heartbeat_timeout_ms: 120000, batch_deadline_ms: 120000, "
                "restart_backoff_ms: 50}\n"
                "programs:\n" + raw_program(
                    WL_FAULT=fault, WL_FAULT_AFTER=after, WL_FAULT_INSTANCE=instance,
                    WL_FAULT_MARKER=str(tmp_path / "marker"),
                    WL_HANG_UNTIL=str(tmp_path / "release")) +
                "sources:\n  lines: {type: file, path: in.txt, framing: line}\n" +
                count_pipeline("lines"))
    return topology, expected


def wait_all_keys_complete(tmp_path, keys, per_key, timeout=30):
    """Waits until every key has its last count in out.txt."""
    def complete():
        try:
            text = (tmp_path / "out.txt").read_text()
        except FileNotFoundError:
            return 0
        return sum(1 for line in text.splitlines() if line.endswith(":%d" % per_key))
    deadline = time.monotonic() + timeout
    while complete() < keys:
        assert time.monotonic() < deadline, (
            "%d of %d keys complete while a runner is stalled" % (complete(), keys))
        time.sleep(0.02)


def test_a_stalled_runner_holds_up_no_key(engine, tmp_path):
    """State belongs to the engine and travels with each batch, so while
    one of two runners is stalled (here: hung until the test releases it,
    with hang detection far away) the other takes over: the batches the
    stalled runner holds are sent to it as well after 1 ms (hedging), and
    the events queued for the stalled instance (the step's home, where
    every event queues) are built into batches for it (stealing). Every
    key completes while the stall lasts; when the stalled runner answers
    at last, its late replies are dropped, and every key's count is still
    exactly once and in order."""
    keys, per_key = 200, 20
    topology, expected = stall_topology(tmp_path, keys, per_key, "hang", 2, 0)
    e = engine(topology)
    # Without either, every key would wait for the stalled runner, here
    # until the deadline.
    wait_all_keys_complete(tmp_path, keys, per_key)
    assert (tmp_path / "marker").exists(), "no runner stalled"
    (tmp_path / "release").write_text("")
    assert e.wait() == 0, e.log()
    assert e.count(r"RUN-HUNG|SUP-RESTART|RUN-PROTO") == 0, e.log()
    check_exactly_once(tmp_path, expected)
    s = e.summary()
    runners = [s["runner=raw/0"], s["runner=raw/1"]]
    assert sum(int(r["hedged"]) for r in runners) >= 1, s
    assert sum(int(r["stolen"]) for r in runners) >= 1, s


def test_the_runner_that_took_over_crashing_loses_nothing(engine, tmp_path):
    """One runner hangs on its 2nd batch; the other, serving its own keys
    and the hung one's hedged and stolen batches, crashes on its 6th. Its
    replacement is sent what it held, hedged batches included; every key
    still completes while the first runner hangs, and when that one
    answers at last, its replies (for batches answered meanwhile) are
    dropped: every count exactly once and in order."""
    keys, per_key = 200, 20
    topology, expected = stall_topology(tmp_path, keys, per_key, "hang,crash", "2,6", "0,1")
    e = engine(topology)
    wait_all_keys_complete(tmp_path, keys, per_key)
    assert (tmp_path / "marker.hang").exists() and (tmp_path / "marker.crash").exists()
    e.wait_for(r"SUP-CRASH runner raw/\d pid \d+ exited with status 3", timeout=1)
    (tmp_path / "release").write_text("")
    assert e.wait() == 0, e.log()
    assert e.count(r"RUN-PROTO|RUN-HUNG") == 0, e.log()
    check_exactly_once(tmp_path, expected)


def count_topology_tcp(**runner_env):
    """A count step on two raw runners, fed by a TCP source of lines."""
    return ("application: home\n"
            "limits: {heartbeat_timeout_ms: 120000, batch_deadline_ms: 120000}\n"
            "programs:\n" + raw_program(**runner_env) +
            "sources:\n  in: {type: tcp, listen: '127.0.0.1:0', framing: line}\n" +
            count_pipeline("in"))


def batches_of(s, runner):
    return int(s["batches runner=%s round_trip" % runner]["samples"])


def test_a_state_step_keeps_to_its_home_runner_while_it_keeps_up(engine, tmp_path):
    """A state step's events all queue at its home instance: while its
    runner keeps up, every batch goes to it, whatever the key (a burst
    split over two runners costs two wake-ups instead of one). Here one
    event at a time, each sent once a runner has answered the previous one
    (each event is one batch, and batch ids count from 1), 40 keys: the
    other runner gets nothing (but a batch it may hedge, should the home
    runner take over 1 ms to answer on a busy machine)."""
    e = engine(count_topology_tcp(WL_ANNOUNCE=1))
    line = e.wait_for(r"SRC-LISTEN source 'in' listening on 127.0.0.1:\d+")
    port = int(line.rsplit(":", 1)[1])
    e.wait_for("READY application")
    with socket.create_connection(("127.0.0.1", port)) as c:
        for i in range(40):
            c.sendall(b"k%03d\n" % i)
            e.wait_for(r"RAW-REPLIED batch %d$" % (i + 1))
    e.terminate()
    assert e.wait() == 0, e.log()
    out = (tmp_path / "out.txt").read_text()
    assert sorted(out.split()) == sorted("k%03d:1" % i for i in range(40))
    s = e.summary()
    assert batches_of(s, "raw/0") + batches_of(s, "raw/1") == 40, s
    assert batches_of(s, "raw/1") <= int(s["runner=raw/1"]["hedged"]), s
    assert s["runner=raw/1"]["spilled"] == "0", s
    assert s["runner=raw/1"]["stolen"] == "0", s


def test_a_home_runner_that_falls_behind_spills_to_the_others(engine, tmp_path):
    """When the home runner has batches queued up and events have waited
    100 us, the other runner builds batches from the home queue
    (spilling). Here the home runner takes 2 ms an event: the other one
    takes most of the work, every batch it answers comes from the home
    queue (or is a hedge), and every count is still exactly once and in
    order. (While the home runner has answered nothing yet, its first
    batches count as stalled after 1 ms, and what the other takes then is
    counted as stolen: 2000 events outlast that.)"""
    expected = write_keyed_lines(tmp_path, 50, 40)
    e = engine("application: spill\n"
               "limits: {batch_max_events: 4, heartbeat_timeout_ms: 120000, "
               "batch_deadline_ms: 120000}\n"
               "programs:\n" + raw_program(WL_SLOW_MS=2, WL_SLOW_INSTANCE=0) +
               "sources:\n  lines: {type: file, path: in.txt, framing: line}\n" +
               count_pipeline("lines"))
    assert e.wait() == 0, e.log()
    check_exactly_once(tmp_path, expected)
    s = e.summary()
    r1 = s["runner=raw/1"]
    assert int(r1["spilled"]) >= 1, s
    assert batches_of(s, "raw/1") > batches_of(s, "raw/0"), s
    assert batches_of(s, "raw/1") <= int(r1["spilled"]) + int(r1["stolen"]) + int(r1["hedged"]), s
    assert s["runner=raw/0"]["spilled"] == "0", s
