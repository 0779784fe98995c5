"""Checkpoints and recovery (--state-dir): the engine killed at any moment
and started again with the same command gives the output of a run without
the crash; SIGTERM takes a final checkpoint; the log's torn tail is
ignored, its corrupt middle refused, a failed write loud.

The oracle: each input line is a key; the state step counts per key and
emits "key:count", so every key's outputs must read key:1, key:2, ...
key:n once each, in order, n being the key's occurrences in the input."""
import collections
import pytest
import os
import random
import sys
import time

from conftest import raw_program

sys.path.insert(0, os.path.dirname(__file__))
from test_connectors import check_exactly_once, conn_program  # noqa: E402

KEYS = 37


def write_input(tmp_path, lines, seed=1):
    rnd = random.Random(seed)
    keys = [b"k%02d" % rnd.randrange(KEYS) for _ in range(lines)]
    # Padded so that the input spans several of the source's 256 KiB reads
    # (back pressure pauses a file source between reads).
    pad = b" " + b"." * 96
    (tmp_path / "in.txt").write_bytes(b"".join(k + pad + b"\n" for k in keys))
    return collections.Counter(keys)


def topology(slow_ms="0.05", limits="queue_max_bytes: 20000, batch_max_events: 64",
             announce=False):
    env = {"WL_SLOW_MS": slow_ms}
    if announce:
        env["WL_ANNOUNCE"] = "1"  # RAW-REPLIED lines on the engine's stderr
    return ("application: oracle\n"
            "limits: {" + limits + "}\n"
            "programs:\n" + raw_program(instances=2, **env) +
            "sources:\n  in: {type: file, path: in.txt, framing: line}\n"
            "steps:\n"
            "  by-key: {kind: key_by, key: {offset: 0, length: 3}, inputs: [in]}\n"
            "  count: {kind: state, program: raw, function: count, state: counts, "
            "inputs: [by-key]}\n"
            "sinks:\n  out: {type: file, path: out/counts.txt, framing: line, "
            "inputs: [count]}\n")


def check_oracle(path, want):
    """Per key: lost, duplicated and out-of-order counts must all be 0."""
    seen = collections.defaultdict(list)
    for line in path.read_bytes().splitlines():
        k, n = line.split(b":")
        seen[k].append(int(n))
    problems = []
    for k, n in want.items():
        got = seen.pop(k, [])
        if got != list(range(1, n + 1)):
            c = collections.Counter(got)
            lost = sum(1 for i in range(1, n + 1) if i not in c)
            dup = sum(v - 1 for v in c.values() if v > 1)
            problems.append("%s: %d outputs for %d inputs, %d lost, %d duplicated, "
                            "first %r" % (k.decode(), len(got), n, lost, dup, got[:8]))
    problems += ["unexpected key %r" % k for k in seen]
    assert not problems, "\n".join(problems[:10])


def wait_lines(path, n, timeout=30.0):
    """Polls (with a deadline) until `path` has at least `n` lines."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_bytes().count(b"\n") >= n:
            return
        time.sleep(0.01)
    raise AssertionError("%s never reached %d lines" % (path, n))


def args(tmp_path, interval="0.05"):
    return ["--state-dir", str(tmp_path / "state"), "--checkpoint-interval", interval]


def test_killed_engine_restarts_from_its_last_checkpoint_exactly_once(engine, tmp_path):
    want = write_input(tmp_path, 20000)
    kills = 0
    seen = []
    for round_ in range(4):
        e = engine(topology(announce=True), *args(tmp_path), group=True)
        # Die a different while after a checkpoint each round: the kill may
        # land in a cut, in a write, or between them.
        e.wait_for(r"CKPT-DONE checkpoint \d+ durable", timeout=60)
        if round_ > 0:
            e.wait_for(r"CKPT-RECOVER recovered checkpoint \d+")
            # Recovery cuts a file only when it held output that no
            # checkpoint committed, which a reader could have seen.
            assert "SINK-TRUNCATE" not in e.log(), e.log()
        if e.proc.poll() is not None:
            break  # finished before the kill
        # Let the runners answer a few batches after that checkpoint, so
        # that the kill finds output no checkpoint has committed yet.
        if not e.wait_count(r"RAW-REPLIED batch", e.count(r"RAW-REPLIED batch") + 8):
            break  # finished before the kill
        e.kill_group()
        kills += 1
        # What a reader of the file saw at the crash: committed output
        # only, so every later version of the file must start with it.
        seen.append((tmp_path / "out" / "counts.txt").read_bytes())
    e = engine(topology(), *args(tmp_path))
    assert e.wait(120) == 0, e.log()
    assert kills >= 2, "the input ran out before the engine was killed twice"
    e.wait_for(r"CKPT-RECOVER recovered checkpoint \d+ from .*state")
    check_oracle(tmp_path / "out" / "counts.txt", want)
    final = (tmp_path / "out" / "counts.txt").read_bytes()
    assert any(seen), "no output was committed before the kills"
    for i, b in enumerate(seen):
        assert final.startswith(b), \
            "after kill %d the file held %d bytes that the final output does not start with" % (i + 1, len(b))
    assert e.summary()["checkpoints"]["failed"] == "0"


def test_sigterm_takes_a_final_checkpoint_and_the_next_run_continues(engine, tmp_path):
    want = write_input(tmp_path, 6000)
    e = engine(topology(slow_ms="0.5"), *args(tmp_path, interval="10"))
    e.wait_for(r"SRC-START source 'in'")
    # Outputs go to the sink's stage file until a checkpoint commits them:
    # with a 10 s interval none has, so the file itself is still empty.
    wait_lines(tmp_path / "state" / "sinks" / "out@1", 500)
    assert (tmp_path / "out" / "counts.txt").read_bytes() == b""
    e.terminate()
    assert e.wait(60) == 0, e.log()
    # The interval is 10 s: the only checkpoint is the final one.
    e.wait_for(r"CKPT-DONE checkpoint 1 durable")
    done = len((tmp_path / "out" / "counts.txt").read_bytes().splitlines())
    assert 0 < done < 6000, "SIGTERM did not land mid-stream (%d outputs)" % done
    e = engine(topology(), *args(tmp_path))
    assert e.wait(60) == 0, e.log()
    line = e.wait_for(r"SRC-RESUME source 'in' resumes .* after message (\d+)")
    assert line.endswith("after message %d" % done)
    e.wait_for(r"SINK-TRUNCATE|CKPT-RECOVER")
    check_oracle(tmp_path / "out" / "counts.txt", want)


def test_each_checkpoint_reports_how_long_its_epoch_took_to_close(engine, tmp_path):
    # A slow runner (0.5 ms per event, batches of 64): a cut lands while
    # batches are out, so an epoch takes a while to close. CKPT-DONE says how
    # long; the summary's total and maximum are those figures.
    import re
    want = write_input(tmp_path, 3000)
    e = engine(topology(slow_ms="0.5"), *args(tmp_path, interval="0.05"))
    assert e.wait(60) == 0, e.log()
    check_oracle(tmp_path / "out" / "counts.txt", want)
    closed = [float(m) for m in re.findall(
        r"CKPT-DONE checkpoint \d+ durable: .* its epoch closed ([0-9.]+) ms after the cut",
        e.log())]
    ck = e.summary()["checkpoints"]
    assert len(closed) == int(ck["checkpoints"]) >= 2, e.log()
    assert max(closed) > 0, closed
    assert abs(float(ck["align_ms_total"]) - sum(closed)) <= 0.1 * len(closed) + 0.1, (ck, closed)
    assert abs(float(ck["align_ms_max"]) - max(closed)) <= 0.1, (ck, closed)


def test_a_second_engine_on_the_same_state_dir_is_refused_and_harms_nothing(engine, tmp_path):
    # Started by mistake while the first runs, a second engine would
    # recover from the log the first appends to and cut its sink back.
    want = write_input(tmp_path, 6000)
    first = engine(topology(slow_ms="0.5"), *args(tmp_path))
    first.wait_for(r"CKPT-DONE checkpoint \d+ durable")
    second = engine(topology(), *args(tmp_path))
    assert second.wait(30) == 1, second.log()
    second.wait_for(r"CKPT-FAIL \S+/state is in use by another engine \(pid %d\): "
                    r"one state directory serves one engine at a time" % first.proc.pid)
    assert second.count("SUP-SPAWN|SINK-TRUNCATE|CKPT-RECOVER") == 0, second.log()
    assert first.wait(60) == 0, first.log()
    check_oracle(tmp_path / "out" / "counts.txt", want)
    # The lock goes with the process: the directory is free again.
    third = engine(topology(), *args(tmp_path))
    assert third.wait(60) == 0, third.log()
    check_oracle(tmp_path / "out" / "counts.txt", want)


def test_a_finished_run_started_again_changes_nothing(engine, tmp_path):
    want = write_input(tmp_path, 2000)
    e = engine(topology(), *args(tmp_path))
    assert e.wait(60) == 0, e.log()
    before = (tmp_path / "out" / "counts.txt").read_bytes()
    e = engine(topology(), *args(tmp_path))
    assert e.wait(60) == 0, e.log()
    assert (tmp_path / "out" / "counts.txt").read_bytes() == before
    assert e.summary()["application"]["events_in"] == "0"
    check_oracle(tmp_path / "out" / "counts.txt", want)


def test_a_torn_log_tail_is_dropped_and_recovery_uses_the_last_complete_checkpoint(
        engine, tmp_path):
    want = write_input(tmp_path, 2000)
    e = engine(topology(), *args(tmp_path))
    assert e.wait(60) == 0, e.log()
    log = tmp_path / "state" / "checkpoints.log"
    size = log.stat().st_size
    with open(log, "ab") as fh:
        fh.write(b"WLCK\x01\x00\x01\x00\xff\x00\x00\x00garbage of a write cut short")
    e = engine(topology(), *args(tmp_path))
    assert e.wait(60) == 0, e.log()
    e.wait_for(r"CKPT-TORN .*checkpoints.log: \d+ bytes after the last complete "
               r"checkpoint \(a torn record\) dropped")
    assert log.stat().st_size == size
    check_oracle(tmp_path / "out" / "counts.txt", want)


def test_corruption_in_the_middle_of_the_log_stops_the_engine(engine, tmp_path):
    write_input(tmp_path, 12000)
    e = engine(topology(slow_ms="0.1"), *args(tmp_path, interval="0.02"))
    assert e.wait(60) == 0, e.log()
    assert int(e.summary()["checkpoints"]["checkpoints"]) >= 3
    log = tmp_path / "state" / "checkpoints.log"
    data = bytearray(log.read_bytes())
    data[len(data) // 3] ^= 0x20
    log.write_bytes(bytes(data))
    e = engine(topology(), *args(tmp_path))
    assert e.wait(60) == 1, e.log()
    e.wait_for(r"CKPT-CORRUPT cannot recover from .*state: .*checkpoints.log offset "
               r"\d+: a damaged record .* corrupt in the middle")
    assert "READY" not in e.log()


def test_a_checkpoint_that_cannot_be_written_fails_loudly_and_acks_nothing(engine, tmp_path):
    """The full checkpoint goes to checkpoints.log.new: made a link to
    /dev/full, its write fails with ENOSPC, as on a full disk."""
    write_input(tmp_path, 3000)
    (tmp_path / "state").mkdir()
    e = engine(topology(slow_ms="0.2"), *args(tmp_path, interval="1"))
    e.wait_for(r"CKPT-EMPTY")
    os.symlink("/dev/full", tmp_path / "state" / "checkpoints.log.new")
    line = e.wait_for(r"CKPT-FAIL checkpoint 1 failed: write .*checkpoints.log.new: "
                      r"No space left on device; the previous checkpoint stands")
    assert line
    # The failed write removed its file; the next (full) one succeeds.
    assert e.wait(120) == 0, e.log()
    e.wait_for(r"CKPT-DONE checkpoint \d+ durable: \d+ bytes \(full\)")
    s = e.summary()["checkpoints"]
    assert int(s["failed"]) >= 1 and int(s["checkpoints"]) >= 1


def test_killed_engine_with_a_connector_source_resumes_exactly_once(engine, tmp_path):
    """A source connector is acknowledged only up to durable checkpoints:
    after the engine and its children die, the new engine resumes the
    streams from the checkpoint and the sink gets everything once."""
    env = dict(WL_STATE=str(tmp_path), WL_COUNT=4000, WL_STREAMS=2)
    topo = ("application: csrc\n"
            "programs:\n" + raw_program(instances=2, WL_SLOW_MS="0.1") +
            conn_program("feed", **env) +
            "sources:\n  in: {type: connector, program: feed}\n"
            "steps:\n  up: {kind: stateless, program: raw, function: upper, inputs: [in]}\n"
            "sinks:\n  out: {type: file, path: out.txt, framing: line, inputs: [up]}\n")
    for _ in range(2):
        e = engine(topo, *args(tmp_path), group=True)
        assert e.wait_count(r"CKPT-DONE checkpoint \d+ durable", 3), \
            "finished before the kill"
        e.kill_group()
    # The connector was told only what durable checkpoints cover.
    acked = [int((tmp_path / ("acked-s%d" % i)).read_text() or 0)
             for i in range(2) if (tmp_path / ("acked-s%d" % i)).exists()]
    assert all(a < 4000 for a in acked), acked
    e = engine(topo, *args(tmp_path))
    assert e.wait(120) == 0, e.log()
    e.wait_for(r"CONN-STREAM source in/0 opened stream \d+ 's0': resume after \d+")
    check_exactly_once(tmp_path / "out.txt", 2, 4000)


def sink_2pc_topology(tmp_path, lines, **env):
    """Lines of the input, upper-cased, to a 2PC connector sink."""
    (tmp_path / "in.txt").write_bytes(b"".join(b"m-%d %s\n" % (i, PAD)
                                               for i in range(1, lines + 1)))
    env.setdefault("WL_STATE", str(tmp_path))
    env.setdefault("WL_OUT", str(tmp_path / "out.txt"))
    env.setdefault("WL_2PC", "1")
    return ("application: csink\n"
            "limits: {batch_max_events: 64, queue_max_bytes: 20000}\n"
            "programs:\n" + raw_program(instances=1, WL_SLOW_MS="0.05") +
            conn_program("deliver", **env) +
            "sources:\n  in: {type: file, path: in.txt, framing: line}\n"
            "steps:\n  up: {kind: stateless, program: raw, function: upper, inputs: [in]}\n"
            "sinks:\n  out: {type: connector, program: deliver, inputs: [up]}\n")


PAD = b"." * 90  # several 256 KiB source reads: see write_input


def want_upper(lines):
    return [b"M-%d %s" % (i, PAD) for i in range(1, lines + 1)]


@pytest.mark.parametrize("fault", ["none", "crash_after_prepare", "crash_after_commit"])
def test_two_phase_sink_commits_an_epoch_only_once_its_checkpoint_is_durable(
        engine, tmp_path, fault):
    e = engine(sink_2pc_topology(tmp_path, 3000, WL_FAULT=fault), *args(tmp_path))
    assert e.wait(60) == 0, e.log()
    assert (tmp_path / "out.txt").read_bytes().splitlines() == want_upper(3000)
    assert not [n for n in os.listdir(tmp_path) if n.startswith(("prepared-", "committing-"))]
    # Every Commit names a durable checkpoint: none before its CKPT-DONE.
    log = e.log()
    assert "CKPT-FAIL" not in log
    if fault != "none":
        e.wait_for(r"SUP-CRASH sink out/0")


def test_killed_engine_with_a_two_phase_sink_delivers_every_output_once(engine, tmp_path):
    lines = 12000
    kills = 0
    topo = sink_2pc_topology(tmp_path, lines)
    for _ in range(3):
        e = engine(topo, *args(tmp_path), group=True)
        if not e.wait_count(r"CKPT-DONE checkpoint \d+ durable", 2):
            break
        e.kill_group()
        kills += 1
    e = engine(topo, *args(tmp_path))
    assert e.wait(120) == 0, e.log()
    assert kills >= 2, "the input ran out before the engine was killed twice"
    got = (tmp_path / "out.txt").read_bytes().splitlines()
    assert got == want_upper(lines), "%d outputs, %d distinct" % (len(got), len(set(got)))
    assert not [n for n in os.listdir(tmp_path) if n.startswith(("prepared-", "committing-"))]


def test_a_changed_partition_count_is_logged_and_the_state_carries_over(engine, tmp_path):
    want = write_input(tmp_path, 3000)
    half = (tmp_path / "in.txt").read_bytes().splitlines(keepends=True)
    (tmp_path / "in.txt").write_bytes(b"".join(half[:1500]))
    e = engine(topology(), *args(tmp_path))
    assert e.wait(60) == 0, e.log()
    # The file grows (a log being appended to) and the partitions change.
    (tmp_path / "in.txt").write_bytes(b"".join(half))
    e = engine("partitions: 64\n" + topology(), *args(tmp_path))
    assert e.wait(60) == 0, e.log()
    e.wait_for(r"CKPT-WARN checkpoint \d+ was taken with 1024 partitions, the topology "
               r"has 64: state is kept by key")
    check_oracle(tmp_path / "out" / "counts.txt", want)


@pytest.mark.parametrize("body,p", [("reply", 0.1), ("prepared", 0.5), ("resolved", 0.5)])
def test_two_phase_sink_sending_damaged_answers_still_gets_every_output_once(
        engine, tmp_path, body, p):
    """The 2PC sink's batch answers, Prepared or Resolved frames arrive
    damaged at random (rawconnector's seeded mutation). Each one the engine
    cannot use drops the connection; the sink's InDoubt list and the
    checkpoints decide what was committed, and every output is delivered
    exactly once, in order."""
    e = engine(sink_2pc_topology(tmp_path, 3000, WL_FAULT="mutate", WL_MUTATE_SEED=1,
                                 WL_MUTATE_P=p, WL_MUTATE_ONLY=body), *args(tmp_path))
    assert e.wait(120) == 0, e.log()
    assert (tmp_path / "out.txt").read_bytes().splitlines() == want_upper(3000)
    assert not [n for n in os.listdir(tmp_path) if n.startswith(("prepared-", "committing-"))]
