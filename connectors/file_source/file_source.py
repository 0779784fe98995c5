#!/usr/bin/env python3
"""file_source: a source connector that reads files, one stream per file.

    file_source.py [--framing line|length] [--name NAME]... FILE...
    file_source.py --connect ADDRESS --token-env VAR [...] FILE...

Each FILE is one stream, named after the path as given (or after the
matching --name). Each record is an event: a line without its "\\n" (and a
"\\r" before it), or with --framing length a big-endian 32-bit length then
that many bytes, as the engine's built-in file source reads them. A
record's message id is its position in the file, from 1, so the ids are
stable across restarts and the engine's ``resume_after`` says where to
start again. At the end of a file the stream ends; once every stream has
ended the connector says Goodbye and exits 0 (a bounded source).

Started by the engine (``program:`` in the topology) it reads its
connection from the environment. With --connect it dials an engine that
declares ``listen: ADDRESS`` and ``token_env: VAR``, reading the token from
its own environment variable VAR (never from the command line, which
other users can see).

README.md walks through this file.
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
import time
from typing import BinaryIO, Dict, List, Optional, Sequence, Tuple, Union

try:
    from wallaroo.connector import (
        ConnectorConfig,
        End,
        Message,
        Source,
        StreamSpec,
        run_source,
    )
except ImportError:  # run from a checkout without PYTHONPATH: use its SDK
    sys.path.insert(
        0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "sdk-python")
    )
    from wallaroo.connector import (
        ConnectorConfig,
        End,
        Message,
        Source,
        StreamSpec,
        run_source,
    )

_LENGTH = struct.Struct(">I")


def warn(message: str) -> None:
    """One line on stderr (the engine keeps it in its log)."""
    print(f"file_source: {message}", file=sys.stderr, flush=True)


class RecordReader:
    """Reads one file record by record and numbers the records from 1."""

    def __init__(self, path: str, framing: str) -> None:
        self.path = path
        self.framing = framing
        self.file: Optional[BinaryIO] = open(path, "rb")
        self.next_id = 1  # the id of the record read() returns next

    def read(self) -> Optional[bytes]:
        """The next record, or None at the end of the file."""
        if self.file is None:
            return None
        record = self._read_line() if self.framing == "line" else self._read_frame()
        if record is None:
            self.close()
        return record

    def _read_line(self) -> Optional[bytes]:
        assert self.file is not None
        line = self.file.readline()
        if not line:
            return None
        # A last line without "\n" is still a line.
        if line.endswith(b"\n"):
            line = line[:-1]
            if line.endswith(b"\r"):
                line = line[:-1]
        return line

    def _read_frame(self) -> Optional[bytes]:
        assert self.file is not None
        head = self.file.read(_LENGTH.size)
        if not head:
            return None
        body = b""
        if len(head) == _LENGTH.size:
            (size,) = _LENGTH.unpack(head)
            body = self.file.read(size)
            if len(body) == size:
                return body
        warn(
            f"{self.path}: the file ends inside a frame "
            f"({len(head) + len(body)} bytes ignored)"
        )
        return None

    def skip(self, count: int) -> None:
        """Skip the first ``count`` records (the engine has them)."""
        while self.next_id <= count and self.read() is not None:
            self.next_id += 1
        self.next_id = count + 1

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


class FileSource(Source):
    """One stream per file; message id = record number."""

    def __init__(self, files: Sequence[Tuple[str, str]], framing: str = "line") -> None:
        """``files``: (stream name, path) pairs, in the order to read them."""
        self.files = list(files)
        self.framing = framing
        self.readers: Dict[str, RecordReader] = {}
        self.ended: set = set()

    def streams(self) -> List[StreamSpec]:
        # No resume hint: a file keeps no acknowledged offset of its own,
        # and the engine remembers how far it got.
        return [StreamSpec(name) for name, _ in self.files]

    def open(self, stream: str, resume_after: int) -> None:
        path = dict(self.files)[stream]
        reader = RecordReader(path, self.framing)
        reader.skip(resume_after)
        self.readers[stream] = reader

    def poll(self, max_events: int, timeout: float) -> List[Union[Message, End]]:
        # A file never makes us wait: read what the credits allow, file
        # after file, and end each stream at the end of its file.
        batch: List[Union[Message, End]] = []
        now = time.time_ns() // 1000
        for name, _ in self.files:
            reader = self.readers.get(name)
            if reader is None or name in self.ended:
                continue
            while len(batch) < max_events:
                record = reader.read()
                if record is None:
                    batch.append(End(name))
                    self.ended.add(name)
                    break
                batch.append(Message(name, reader.next_id, record, event_time=now))
                reader.next_id += 1
            if len(batch) >= max_events:
                break
        return batch

    def close(self) -> None:
        for reader in self.readers.values():
            reader.close()


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="file_source.py",
        description="A Wallaroo source connector: one stream per file, one event per record.",
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="a file to read")
    parser.add_argument(
        "--framing",
        choices=("line", "length"),
        default="line",
        help="line: one event per line; length: a big-endian u32 length, then the bytes",
    )
    parser.add_argument(
        "--name",
        action="append",
        metavar="NAME",
        help="the stream name of the matching FILE (default: the path as given); "
        "give one per FILE",
    )
    parser.add_argument("--connect", metavar="ADDRESS", help="dial an engine that listens here")
    parser.add_argument(
        "--token-env", metavar="VAR", help="with --connect: the variable holding the token"
    )
    args = parser.parse_args(argv)
    if args.name is not None and len(args.name) != len(args.files):
        parser.error(f"{len(args.name)} --name for {len(args.files)} files: give one per file")
    names = args.name or args.files
    if len(set(names)) != len(names):
        parser.error("two files have the same stream name")
    if bool(args.connect) != bool(args.token_env):
        parser.error("--connect and --token-env go together")
    if args.token_env and not os.environ.get(args.token_env):
        parser.error(f"--token-env {args.token_env}: that variable is not set")
    for path in args.files:
        if not os.access(path, os.R_OK) or os.path.isdir(path):
            parser.error(f"{path}: not a readable file")
    args.streams = list(zip(names, args.files))
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    config = None
    if args.connect:
        config = ConnectorConfig(
            address=args.connect,
            token=os.environ[args.token_env],
            program="file_source",
        )
    return run_source(FileSource(args.streams, args.framing), config)


if __name__ == "__main__":
    sys.exit(main())
