#!/usr/bin/env python3
"""file_sink: a sink connector that appends every output to a file.

    file_sink.py [--framing line|length] FILE
    file_sink.py --connect ADDRESS --token-env VAR [--framing ...] FILE

Each output's payload is appended to FILE followed by "\\n" (line framing,
the default), or after its big-endian 32-bit length (--framing length), as
the engine's built-in file sink writes them. A batch is flushed and
fsync'd before the SDK answers it, so an answered batch is on disk.

Guarantee: at-least-once. A batch written just before the connector dies,
and therefore never answered, is sent again by the engine and appended a
second time. Nothing answered is ever lost.

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
from typing import List, Optional, Sequence

try:
    from wallaroo.connector import ConnectorConfig, Output, Sink, run_sink
except ImportError:  # run from a checkout without PYTHONPATH: use its SDK
    sys.path.insert(
        0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "sdk-python")
    )
    from wallaroo.connector import ConnectorConfig, Output, Sink, run_sink

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
        sink = FileSink(args.file, args.framing)
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
