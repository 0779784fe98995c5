"""The connectors under test, one kit each: how to give a source its N
messages upstream, how to start the connector (spawned by the engine, or
by an operator with --connect), and where a sink's deliveries land.

A new connector joins the conformance suite by adding a kit here."""
import os
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


KITS = [FileSource(), FileSink()]
