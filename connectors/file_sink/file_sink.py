#!/usr/bin/env python3
"""file_sink: a sink connector that appends every output to a file.

    file_sink.py [--framing line|length] [--exactly-once] FILE
    file_sink.py --connect ADDRESS --token-env VAR [--framing ...] FILE

Each output's payload is appended to FILE followed by "\\n" (line framing,
the default), or after its big-endian 32-bit length (--framing length), as
the engine's built-in file sink writes them. A batch is flushed and
fsync'd before the SDK answers it, so an answered batch is on disk.

Guarantee: at-least-once. A batch written just before the connector dies,
and therefore never answered, is sent again by the engine and appended a
second time. Nothing answered is ever lost.

With --exactly-once it is a two-phase-commit sink (TwoPhaseSink): outputs
of an epoch go to a pending file in FILE.2pc/, Prepare makes it durable,
Commit appends it to FILE, and FILE only ever holds committed epochs, each
once, whatever is killed when (the engine needs --state-dir for this).

Started by the engine (``program:`` in the topology) it reads its
connection from the environment; with --connect it dials an engine that
declares ``listen: ADDRESS`` and ``token_env: VAR``.

README.md walks through this file.
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
from typing import Dict, List, Optional, Sequence, Tuple

try:
    from wallaroo.connector import ConnectorConfig, Output, Sink, TwoPhaseSink, run_sink
except ImportError:  # run from a checkout without PYTHONPATH: use its SDK
    sys.path.insert(
        0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "sdk-python")
    )
    from wallaroo.connector import ConnectorConfig, Output, Sink, TwoPhaseSink, run_sink

_LENGTH = struct.Struct(">I")


class FileSink(Sink):
    """Appends outputs to one file; durable before each batch is answered."""

    def __init__(self, path: str, framing: str = "line") -> None:
        self.path = path
        self.framing = framing
        created = not os.path.exists(path)
        # A raw descriptor, not a buffered file: after a failed write no
        # bytes may stay behind in a buffer to be written with the next batch.
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        if created:
            # A new file's name is durable only once its directory is.
            fsync_directory(os.path.dirname(os.path.abspath(path)))

    def encode(self, outputs: List[Output]) -> bytes:
        if self.framing == "line":
            return b"".join(o.payload + b"\n" for o in outputs)
        return b"".join(_LENGTH.pack(len(o.payload)) + o.payload for o in outputs)

    def write(self, epoch: int, outputs: List[Output]) -> None:
        data = memoryview(self.encode(outputs))
        start = os.fstat(self.fd).st_size
        try:
            while data:
                written = os.write(self.fd, data)
                data = data[written:]
            os.fsync(self.fd)
        except OSError:
            # Leave the file as it was, so that the engine's resend does not
            # follow half a batch; then let the SDK report the failure.
            try:
                os.ftruncate(self.fd, start)
            except OSError:
                pass
            raise

    def close(self) -> None:
        os.close(self.fd)


class FileSink2PC(TwoPhaseSink):
    """Exactly-once: FILE holds committed epochs only, each once.

    FILE.2pc/ holds the epochs in flight:

    - ``E.pending``: outputs of epoch E as they come (not durable);
    - ``E-I.prepared``: epoch E prepared by engine incarnation I (renamed
      from pending after an fsync: durable, not visible);
    - ``E.commit``: FILE's length before epoch E was appended to it.

    Commit writes the marker first, cuts FILE back to the marker's length
    (undoing a commit cut short by a crash), appends, fsyncs, then removes
    the prepared file and the marker: a commit repeated after any crash
    appends the epoch exactly once.
    """

    def __init__(self, path: str, framing: str = "line") -> None:
        self.plain = FileSink(path, framing)
        self.path = path
        self.dir = path + ".2pc"
        os.makedirs(self.dir, exist_ok=True)
        self.pending: Dict[int, int] = {}
        for name in os.listdir(self.dir):
            # Not prepared: the engine sends those outputs again.
            if name.endswith(".pending"):
                os.unlink(os.path.join(self.dir, name))
        for epoch, _ in self.in_doubt():
            # A commit cut short: finish it only when the engine says so,
            # but never leave FILE longer than before it.
            self._undo_partial(epoch)

    def _file(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def _prepared(self, epoch: int) -> Optional[str]:
        for name in os.listdir(self.dir):
            if name.startswith(f"{epoch}-") and name.endswith(".prepared"):
                return self._file(name)
        return None

    def _undo_partial(self, epoch: int) -> None:
        marker = self._file(f"{epoch}.commit")
        if os.path.exists(marker):
            with open(marker, "rb") as fh:
                os.ftruncate(self.plain.fd, int(fh.read()))

    def write(self, epoch: int, outputs: List[Output]) -> None:
        fd = self.pending.get(epoch)
        if fd is None:
            fd = os.open(self._file(f"{epoch}.pending"),
                         os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
            self.pending[epoch] = fd
        data = memoryview(self.plain.encode(outputs))
        while data:
            data = data[os.write(fd, data):]

    def prepare(self, epoch: int, incarnation: int) -> None:
        fd = self.pending.pop(epoch, None)
        src = self._file(f"{epoch}.pending")
        if fd is None:
            open(src, "ab").close()  # an epoch without outputs here
        else:
            os.fsync(fd)
            os.close(fd)
        os.rename(src, self._file(f"{epoch}-{incarnation}.prepared"))
        fsync_directory(self.dir)

    def commit(self, epoch: int) -> None:
        prepared = self._prepared(epoch)
        if prepared is None:
            return  # committed before a crash, which lost the Resolved
        marker = self._file(f"{epoch}.commit")
        if os.path.exists(marker):
            self._undo_partial(epoch)
        else:
            tmp = marker + ".tmp"
            with open(tmp, "wb") as fh:
                fh.write(b"%d" % os.fstat(self.plain.fd).st_size)
                fh.flush()
                os.fsync(fh.fileno())
            os.rename(tmp, marker)
            fsync_directory(self.dir)
        with open(prepared, "rb") as fh:
            data = memoryview(fh.read())
        while data:
            data = data[os.write(self.plain.fd, data):]
        os.fsync(self.plain.fd)
        os.unlink(prepared)
        os.unlink(marker)
        fsync_directory(self.dir)

    def abort(self, epoch: int) -> None:
        fd = self.pending.pop(epoch, None)
        if fd is not None:
            os.close(fd)
        for path in (self._file(f"{epoch}.pending"), self._prepared(epoch)):
            if path is not None and os.path.exists(path):
                os.unlink(path)
        fsync_directory(self.dir)

    def in_doubt(self) -> List[Tuple[int, int]]:
        out = []
        for name in os.listdir(self.dir):
            if name.endswith(".prepared"):
                epoch, incarnation = name[: -len(".prepared")].split("-")
                out.append((int(epoch), int(incarnation)))
        return sorted(out)

    def close(self) -> None:
        for fd in self.pending.values():
            os.close(fd)
        self.pending.clear()
        self.plain.close()


def fsync_directory(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="file_sink.py",
        description="A Wallaroo sink connector: append every output to a file.",
    )
    parser.add_argument("file", metavar="FILE", help="the file to append to")
    parser.add_argument(
        "--framing",
        choices=("line", "length"),
        default="line",
        help="line: payload then \\n; length: a big-endian u32 length, then the payload",
    )
    parser.add_argument(
        "--exactly-once",
        action="store_true",
        help="two-phase commit: FILE holds committed epochs only, each once "
        "(epochs in flight live in FILE.2pc/)",
    )
    parser.add_argument("--connect", metavar="ADDRESS", help="dial an engine that listens here")
    parser.add_argument(
        "--token-env", metavar="VAR", help="with --connect: the variable holding the token"
    )
    args = parser.parse_args(argv)
    if bool(args.connect) != bool(args.token_env):
        parser.error("--connect and --token-env go together")
    if args.token_env and not os.environ.get(args.token_env):
        parser.error(f"--token-env {args.token_env}: that variable is not set")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    try:
        sink = (FileSink2PC if args.exactly_once else FileSink)(args.file, args.framing)
    except OSError as exc:
        print(f"file_sink: cannot open {args.file}: {exc.strerror}", file=sys.stderr)
        return 2
    config = None
    if args.connect:
        config = ConnectorConfig(
            address=args.connect, token=os.environ[args.token_env], program="file_sink"
        )
    return run_sink(sink, config)


if __name__ == "__main__":
    sys.exit(main())
