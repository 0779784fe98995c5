"""The chaos harness: runs the oracle application under wallaroo-engine
with --state-dir, injects seeded faults, then checks that the committed
output holds every number of every key exactly once, in order.

    tests/chaos/run [--faults N] [--seed S] [--dir DIR] [--keep]

Faults, chosen by the seed: SIGKILL of the engine (with everything it
started: the machine's process tree going down), of a runner, of the
source connector, of the sink connector; SIGSTOP then SIGCONT of each of
them; SIGTERM of the engine and a restart. After each fault the harness
waits for a checkpoint to complete (the CKPT-DONE line of the engine): that
the application recovered and made progress is what it measures as the
recovery time. It never sleeps to wait for something, only to hold a
process stopped for a seeded while.

At the end the source is told to stop (DIR/STOP), the engine drains and
exits, and one line gives the figures; exit 0 only when nothing was lost,
duplicated or out of order in either sink (the 2PC file sink connector and
the built-in file sink).
"""

import argparse
import collections
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
import checker  # noqa: E402

FAULTS = ["kill-engine", "term-engine", "stop-engine",
          "kill-runner", "stop-runner",
          "kill-source", "stop-source",
          "kill-sink", "stop-sink"]
KEYS = 50
FILE_KEYS = 20
FILE_LINES = 40000
SPAWN = re.compile(r"SUP-SPAWN (?:runner|source|sink) (\S+) pid (\d+)")
DONE = re.compile(r"CKPT-DONE checkpoint (\d+) durable")
READY = re.compile(r"READY application")


class Failure(Exception):
    pass


def engine_binary():
    return os.environ.get("WALLAROO_ENGINE", os.path.join(ROOT, "build", "wallaroo-engine"))


class Engine:
    """One run of wallaroo-engine, leading its own process group; its
    stderr is kept (and copied to a log file) line by line."""

    def __init__(self, workdir, n, control=False):
        self.lines = []
        self.cond = threading.Condition()
        self.log = open(os.path.join(workdir, "engine-%03d.log" % n), "w")
        # control: no --state-dir, to show that the harness catches what
        # checkpoints prevent (progress is then READY, not CKPT-DONE).
        ckpt = [] if control else ["--state-dir", "state", "--checkpoint-interval", "0.2"]
        self.proc = subprocess.Popen(
            [engine_binary(), "--topology", "topology.yaml"] + ckpt,
            cwd=workdir, stdout=self.log, stderr=subprocess.PIPE, text=True,
            start_new_session=True)
        self.t = threading.Thread(target=self._pump, daemon=True)
        self.t.start()

    def _pump(self):
        for line in self.proc.stderr:
            self.log.write(line)
            with self.cond:
                self.lines.append(line.rstrip("\n"))
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def wait_line(self, rx, after=0, timeout=60.0):
        """The index of the first line after `after` matching `rx`."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for i in range(after, len(self.lines)):
                    if rx.search(self.lines[i]):
                        return i
                if time.monotonic() > deadline:
                    raise Failure("no %r within %.0f s" % (rx.pattern, timeout))
                if self.proc.poll() is not None and not self.t.is_alive():
                    raise Failure("engine exited (%s) waiting for %r"
                                  % (self.proc.returncode, rx.pattern))
                self.cond.wait(0.2)

    def pids(self):
        """The latest pid of every child slot, by name (py/0, gen/0...)."""
        out = {}
        with self.cond:
            for line in self.lines:
                m = SPAWN.search(line)
                if m:
                    out[m.group(1)] = int(m.group(2))
        return out

    def mark(self):
        with self.cond:
            return len(self.lines)

    def kill_all(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        self.t.join(10)
        self.log.close()

    def finish(self, timeout):
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill_all()
            raise Failure("engine did not exit within %.0f s" % timeout)
        self.t.join(10)
        self.log.close()
        return rc


def write_app(workdir, rate):
    py = sys.executable
    sdk = os.path.join(ROOT, "sdk-python")
    # The file source's keys: FILE_KEYS keys, numbered 1, 2, ... each.
    counts = collections.Counter()
    with open(os.path.join(workdir, "file.txt"), "wb") as fh:
        rnd = random.Random(0)
        for _ in range(FILE_LINES):
            k = b"f%03d" % rnd.randrange(FILE_KEYS)
            counts[k] += 1
            fh.write(b"%s %d\n" % (k, counts[k]))
    topo = """\
application: chaos-oracle
limits: {heartbeat_ms: 200, heartbeat_timeout_ms: 1000, queue_max_bytes: 1000000}
programs:
  py:
    argv: [%(py)s, %(here)s/oracle.py]
    instances: 2
    env: {PYTHONPATH: %(sdk)s}
  gen:
    argv: [%(py)s, %(here)s/oracle_source.py, %(work)s, --keys, "%(keys)d", --rate, "%(rate)g"]
  deliver:
    argv: [%(py)s, %(root)s/connectors/file_sink/file_sink.py, --exactly-once, %(work)s/out/committed.txt]
    env: {PYTHONPATH: %(sdk)s}
sources:
  gen: {type: connector, program: gen}
  file: {type: file, path: file.txt, framing: line}
steps:
  by-key: {kind: key_by, key: {offset: 0, length: 4}, inputs: [gen, file]}
  check: {kind: state, program: py, state: last, inputs: [by-key]}
sinks:
  out: {type: connector, program: deliver, inputs: [check]}
  builtin: {type: file, path: out/builtin.txt, framing: line, inputs: [check]}
""" % dict(py=py, here=HERE, sdk=sdk, work=workdir, keys=KEYS, rate=rate, root=ROOT)
    os.makedirs(os.path.join(workdir, "out"), exist_ok=True)
    with open(os.path.join(workdir, "topology.yaml"), "w") as fh:
        fh.write(topo)
    return dict(counts)


def wait_output(workdir, grow, timeout=60.0):
    """Control runs have no checkpoint to wait for: waits (with a
    deadline) until the committed output has grown by `grow` bytes."""
    path = os.path.join(workdir, "out", "committed.txt")
    size = lambda: os.path.getsize(path) if os.path.exists(path) else 0  # noqa: E731
    start, deadline = size(), time.monotonic() + timeout
    while size() < start + grow:
        if time.monotonic() > deadline:
            raise Failure("no output for %.0f s" % timeout)
        time.sleep(0.02)


def signal_pid(pid, sig):
    try:
        os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False


def run(args):
    workdir = args.dir or tempfile.mkdtemp(prefix="wl-chaos-")
    if os.path.exists(os.path.join(workdir, "state")):
        raise Failure("%s already holds a run; give an empty --dir" % workdir)
    os.makedirs(workdir, exist_ok=True)
    file_counts = write_app(workdir, args.rate)
    try:
        return _run(args, workdir, file_counts)
    except Failure as exc:
        raise Failure("%s (the run is kept in %s)" % (exc, workdir))


def _run(args, workdir, file_counts):
    rnd = random.Random(args.seed)
    injected = collections.Counter()
    longest = 0.0
    n_engines = 0
    e = Engine(workdir, n_engines, args.control)
    if args.control:
        wait_output(workdir, 20000)
    else:
        e.wait_line(DONE, timeout=60)
    try:
        for _ in range(args.faults):
            kind = rnd.choice(args.only or FAULTS)
            what, target = kind.split("-")
            mark = e.mark()
            t0 = time.monotonic()
            if target == "engine":
                if what == "kill":
                    e.kill_all()
                elif what == "term":
                    e.proc.send_signal(signal.SIGTERM)
                    rc = e.finish(120)
                    if rc != 0:
                        raise Failure("SIGTERM: engine exited %d" % rc)
                else:
                    signal_pid(e.proc.pid, signal.SIGSTOP)
                    time.sleep(rnd.uniform(0.1, 1.5))
                    signal_pid(e.proc.pid, signal.SIGCONT)
                if what in ("kill", "term"):
                    n_engines += 1
                    e = Engine(workdir, n_engines, args.control)
                    mark = 0
            else:
                pids = e.pids()
                names = sorted(n for n in pids if n.startswith(
                    {"runner": "py/", "source": "gen/", "sink": "out/"}[target]))
                pid = pids[rnd.choice(names)]
                if what == "kill":
                    signal_pid(pid, signal.SIGKILL)
                else:
                    signal_pid(pid, signal.SIGSTOP)
                    time.sleep(rnd.uniform(0.1, 1.5))
                    signal_pid(pid, signal.SIGCONT)
            injected[kind] += 1
            if args.control:
                wait_output(workdir, 20000)
            else:
                e.wait_line(DONE, after=mark, timeout=60)
            longest = max(longest, time.monotonic() - t0)
            # Let it run a seeded number of checkpoints before the next.
            for _ in range(rnd.randrange(3)):
                if not args.control:
                    e.wait_line(DONE, after=e.mark(), timeout=60)
        open(os.path.join(workdir, "STOP"), "w").close()
        rc = e.finish(180)
        if rc != 0:
            raise Failure("the final run exited %d" % rc)
    finally:
        if e.proc.poll() is None:
            e.kill_all()
    ends = {}
    for s in ("a", "b"):
        with open(os.path.join(workdir, "end-" + s)) as fh:
            ends[s] = int(fh.read())
    want = checker.expected_counts(ends, KEYS, file_counts)
    reports = {name: checker.check(os.path.join(workdir, "out", name + ".txt"), want)
               for name in ("committed", "builtin")}
    sent = sum(want.values())
    bad = sum(r.lost + r.duplicated + r.out_of_order + r.gaps + r.unexpected
              for r in reports.values())
    c, b = reports["committed"], reports["builtin"]
    print("chaos seed=%d faults=%d %s events=%d outputs=%d builtin=%d lost=%d duplicated=%d "
          "out_of_order=%d gaps=%d unexpected=%d longest_recovery_s=%.2f engines=%d"
          % (args.seed, sum(injected.values()),
             " ".join("%s=%d" % (k, injected[k]) for k in FAULTS),
             sent, c.outputs, b.outputs,
             c.lost + b.lost, c.duplicated + b.duplicated,
             c.out_of_order + b.out_of_order, c.gaps + b.gaps,
             c.unexpected + b.unexpected, longest, n_engines + 1))
    for name, r in reports.items():
        for ex in r.examples:
            print("  %s: %s" % (name, ex))
    if bad == 0 and c.outputs == sent and b.outputs == sent:
        if not args.keep and not args.dir:
            shutil.rmtree(workdir, ignore_errors=True)
        return 0
    print("chaos: FAILED; the run is kept in %s" % workdir)
    return 1


def main(argv=None):
    p = argparse.ArgumentParser(description="Seeded fault injection against the oracle "
                                "application; exit 0 only on exactly-once results.")
    p.add_argument("--faults", type=int, default=30)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--rate", type=float, default=1500.0,
                   help="events/s per stream of the connector source (two streams)")
    p.add_argument("--dir", help="work directory (default: a new temporary one)")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument("--only", action="append", choices=FAULTS,
                   help="inject only this kind of fault (repeatable)")
    p.add_argument("--control", action="store_true",
                   help="run without --state-dir: a run that must fail, to show "
                   "the harness catches what checkpoints prevent")
    args = p.parse_args(argv)
    if not os.access(engine_binary(), os.X_OK):
        print("chaos: %s is not built (run scripts/setup, or set WALLAROO_ENGINE)"
              % engine_binary(), file=sys.stderr)
        return 2
    try:
        return run(args)
    except Failure as exc:
        print("chaos seed=%d: FAILED: %s" % (args.seed, exc))
        return 1


if __name__ == "__main__":
    sys.exit(main())
