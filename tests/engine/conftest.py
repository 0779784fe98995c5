"""Fixtures for the engine's integration tests: they run the real
wallaroo-engine binary with real runner processes, and wait on the lines
it prints (READY, tags), never on sleeps."""
import os
import re
import resource
import signal
import subprocess
import sys
import threading
import time

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
RAWRUNNER = os.path.join(ROOT, "tests", "engine", "rawrunner.py")
SANITIZER = re.compile(r"(ERROR: (Address|Leak)Sanitizer|runtime error:)")


def engine_binary():
    path = os.environ.get("WALLAROO_ENGINE", os.path.join(ROOT, "build", "wallaroo-engine"))
    if not os.access(path, os.X_OK):
        pytest.fail("wallaroo-engine not built at %s (set WALLAROO_ENGINE)" % path)
    return path


class Engine:
    """A running wallaroo-engine, its stderr collected line by line."""

    def __init__(self, args, cwd, group=False, nofile=None, env=None, wrap=()):
        self.lines = []
        self.cond = threading.Condition()
        # group: the engine leads its own process group, so that a crash of
        # the whole machine (engine and children) can be simulated.
        # nofile: the engine's limit on open descriptors (RLIMIT_NOFILE).
        # env: variables added to the engine's environment.
        # wrap: a command that execs the engine (setpriv, to drop a
        # capability), placed before it.
        limit = None
        if nofile is not None:
            limit = lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
        self.proc = subprocess.Popen(
            list(wrap) + [engine_binary()] + args, cwd=cwd, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, start_new_session=group,
            preexec_fn=limit, env=None if env is None else dict(os.environ, **env))
        self.group = group
        self.stdout = ""
        self._out = []
        self._t_err = threading.Thread(target=self._pump_err, daemon=True)
        self._t_out = threading.Thread(target=lambda: self._out.extend(self.proc.stdout), daemon=True)
        self._t_err.start()
        self._t_out.start()

    def _pump_err(self):
        for line in self.proc.stderr:
            with self.cond:
                self.lines.append(line.rstrip("\n"))
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def wait_for(self, pattern, timeout=30.0):
        """Returns the first stderr line matching `pattern` (a regex),
        waiting up to `timeout` seconds for it."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for line in self.lines:
                    if rx.search(line):
                        return line
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._t_err.is_alive()):
                    raise AssertionError("no line matching %r within %.0fs; stderr:\n%s"
                                         % (pattern, timeout, self.log()))
                self.cond.wait(min(left, 0.2))

    def wait_count(self, pattern, n, timeout=60.0):
        """Waits for `n` stderr lines matching `pattern`; False when the
        engine exits first."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self.cond:
            while sum(1 for line in self.lines if rx.search(line)) < n:
                if self.proc.poll() is not None:
                    return False
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("fewer than %d lines matching %r within %.0fs; "
                                         "stderr:\n%s" % (n, pattern, timeout, self.log()))
                self.cond.wait(min(left, 0.2))
        return True

    def count(self, pattern):
        rx = re.compile(pattern)
        with self.cond:
            return sum(1 for line in self.lines if rx.search(line))

    def log(self):
        with self.cond:
            return "\n".join(self.lines)

    def wait(self, timeout=60.0):
        """Waits for the exit; returns the exit code. Fails the test on a
        sanitizer report."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("engine did not exit within %.0fs; stderr:\n%s"
                                 % (timeout, self.log()))
        self._t_err.join(10)
        self._t_out.join(10)
        self.stdout = "".join(self._out)
        assert not SANITIZER.search(self.log()), "sanitizer report:\n" + self.log()
        return self.proc.returncode

    def terminate(self):
        self.proc.send_signal(signal.SIGTERM)

    def summary(self):
        """SUMMARY lines as {"application": {...}, "source=x": {...}, ...}."""
        out = {}
        for line in self.stdout.splitlines():
            if not line.startswith("SUMMARY "):
                continue
            fields = line.split()[1:]
            head = fields[0]
            kv = dict(f.split("=", 1) for f in fields if "=" in f)
            if head == "latency":  # "SUMMARY latency source=x ..."
                name = "latency " + fields[1]
            elif head == "batches":  # "SUMMARY batches runner=p/0 round_trip ..."
                name = "batches %s %s" % (fields[1], fields[2])
            else:
                name = head if head.startswith(("source=", "step=", "sink=", "runner=")) else head.split("=")[0]
            out[name] = kv
        return out

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.group:
            self.kill_group()

    def kill_group(self):
        """SIGKILL to the engine and every process it started."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        self._t_err.join(10)
        self._t_out.join(10)
        self.stdout = "".join(self._out)


@pytest.fixture
def engine(tmp_path):
    """engine(topology_text) writes the topology into a temporary
    directory and starts the engine on it."""
    started = []

    def start(topology, *extra, group=False, nofile=None, env=None, wrap=()):
        path = tmp_path / "topology.yaml"
        path.write_text(topology)
        e = Engine(["--topology", str(path)] + list(extra), cwd=str(tmp_path),
                   group=group, nofile=nofile, env=env, wrap=wrap)
        started.append(e)
        return e

    yield start
    for e in started:
        e.kill()


def raw_program(instances=2, **env):
    """The YAML of a program running tests/engine/rawrunner.py."""
    envs = ", ".join('%s: "%s"' % (k, v) for k, v in env.items())
    return ("  raw:\n    argv: [%s, %s]\n    instances: %d\n    env: {%s}\n"
            % (sys.executable, RAWRUNNER, instances, envs))
