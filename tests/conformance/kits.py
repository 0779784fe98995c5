"""The connectors under test, one kit each: how to give a source its N
messages upstream, how to start the connector (spawned by the engine, or
by an operator with --connect), and where a sink's deliveries land.

A new connector joins the conformance suite by adding a kit here. A kit
may need something set up once per session (a private RabbitMQ node, a
Go build): it names the fixtures in ``needs`` and gets them in
``use(**fixtures)`` before its first test."""
import itertools
import os
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PY = sys.executable


def payload(i):
    """The i-th message (1-based) a source kit puts upstream."""
    return b"msg-%06d" % i


class FileSource:
    """connectors/file_source: two files, one stream each."""
    name = "file_source"
    role = "source"
    program = os.path.join(ROOT, "connectors", "file_source", "file_source.py")

    def setup(self, tmp, n):
        half = n // 2
        (tmp / "a.txt").write_bytes(b"".join(payload(i) + b"\n" for i in range(1, half + 1)))
        (tmp / "b.txt").write_bytes(b"".join(payload(i) + b"\n" for i in range(half + 1, n + 1)))

    def argv(self, tmp):
        return [PY, self.program, "a.txt", "b.txt"]

    def accepted(self, tmp, address, token_var):
        return [PY, self.program, "--connect", address, "--token-env", token_var, "a.txt"]

    bounded = True


class FileSink:
    """connectors/file_sink: appends and fsyncs; at-least-once."""
    name = "file_sink"
    role = "sink"
    program = os.path.join(ROOT, "connectors", "file_sink", "file_sink.py")
    at_least_once = True

    def setup(self, tmp, n):
        pass

    def argv(self, tmp):
        return [PY, self.program, str(tmp / "delivered.txt")]

    def accepted(self, tmp, address, token_var):
        return [PY, self.program, "--connect", address, "--token-env", token_var,
                str(tmp / "delivered.txt")]

    def delivered(self, tmp):
        path = tmp / "delivered.txt"
        return path.read_bytes().splitlines() if path.exists() else []


class GoFileSource(FileSource):
    """connectors/file_source_go: the same command line as file_source,
    in Go (built once per session with go build)."""
    name = "file_source_go"
    needs = ("go_build",)

    def use(self, go_build):
        self.program = go_build(os.path.join(ROOT, "connectors", "file_source_go"))

    def argv(self, tmp):
        return [self.program, "a.txt", "b.txt"]

    def accepted(self, tmp, address, token_var):
        return [self.program, "--connect", address, "--token-env", token_var, "a.txt"]


_queues = itertools.count(1)


class RabbitMQSource:
    """connectors/rabbitmq_source: N messages in a queue of a private
    broker (message_id = 1..N). Endless: stopped by SIGTERM."""
    name = "rabbitmq_source"
    role = "source"
    program = os.path.join(ROOT, "connectors", "rabbitmq_source", "rabbitmq_source.py")
    needs = ("rabbit",)
    bounded = False

    def use(self, rabbit):
        self.url = rabbit.url

    def setup(self, tmp, n):
        import broker
        self.queue = "conformance-in-%d" % next(_queues)
        if n:
            broker.publish(self.url, self.queue, n, body=payload)
        else:
            broker.declare(self.url, self.queue)

    def argv(self, tmp):
        return [PY, self.program, "--url", self.url, "--queue", self.queue]

    def accepted(self, tmp, address, token_var):
        return self.argv(tmp) + ["--engine", address, "--token-env", token_var]


class RabbitMQSink:
    """connectors/rabbitmq_sink --exactly-once: publishes to a queue of a
    private broker in transactions."""
    name = "rabbitmq_sink"
    role = "sink"
    program = os.path.join(ROOT, "connectors", "rabbitmq_sink", "rabbitmq_sink.py")
    needs = ("rabbit",)
    at_least_once = False

    def use(self, rabbit):
        self.url = rabbit.url

    def setup(self, tmp, n):
        import broker
        self.queue = "conformance-out-%d" % next(_queues)
        broker.declare(self.url, self.queue)

    def argv(self, tmp):
        return [PY, self.program, "--url", self.url, "--routing-key", self.queue,
                "--exactly-once", "--state-dir", str(tmp / "sink-state")]

    def accepted(self, tmp, address, token_var):
        return self.argv(tmp) + ["--engine", address, "--token-env", token_var]

    def delivered_count(self, tmp):
        import broker
        return broker.ready_count(self.url, self.queue)

    def delivered(self, tmp):
        """Takes everything delivered (called once the run is over), as a
        consumer following the sink's README sees it: a message whose id
        came before is a repeat of an epoch (a failure between its two
        commits) and is dropped, after checking it is the same output."""
        import broker
        seen = {}
        out = []
        for m in broker.drain(self.url, self.queue):
            assert m.message_id is not None, "an output without a message id"
            if m.message_id in seen:
                assert seen[m.message_id] == m.body, "message id %s names two outputs" % m.message_id
                continue
            seen[m.message_id] = m.body
            out.append(m.body)
        return out


def go_build(module_dir, out_dir):
    """Builds the Go program in module_dir into out_dir; returns its path.
    Raises with go's output when it does not build."""
    out = os.path.join(out_dir, os.path.basename(module_dir))
    r = subprocess.run(["go", "build", "-o", out, "."], cwd=module_dir,
                       capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError("go build in %s failed:\n%s" % (module_dir, r.stderr))
    return out


KITS = [FileSource(), FileSink(), GoFileSource(), RabbitMQSource(), RabbitMQSink()]
