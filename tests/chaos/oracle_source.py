#!/usr/bin/env python3
"""The chaos harness's source connector (Python SDK): endless streams of
"KEY N" events at a fixed rate, until the harness says stop.

    oracle_source.py DIR [--streams a,b] [--keys 50] [--rate 2000]

Stream S's message id i is key S%03d of (i-1) mod KEYS, number
(i-1) // KEYS + 1: any id can be produced again after a restart, the same.
When DIR/STOP exists each stream ends at the last id this process has
produced (or the engine's resume position), written to DIR/end-S the first
time; a restarted connector reads it back and ends there too, so the
harness knows exactly what was sent.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                "sdk-python"))
from wallaroo.connector import End, Message, Source, StreamSpec, run_source  # noqa: E402


def payload(stream: str, keys: int, i: int) -> bytes:
    return b"%s%03d %d" % (stream.encode(), (i - 1) % keys, (i - 1) // keys + 1)


class OracleSource(Source):
    def __init__(self, directory: str, names, keys: int, rate: float) -> None:
        self.dir = directory
        self.names = list(names)
        self.keys = keys
        self.rate = rate
        self.next = {}
        self.end = {}
        self.ended = set()
        self.t0 = time.monotonic()
        self.sent = 0
        for s in self.names:
            try:
                with open(self._end_file(s)) as fh:
                    self.end[s] = int(fh.read())
            except FileNotFoundError:
                pass

    def _end_file(self, stream: str) -> str:
        return os.path.join(self.dir, "end-" + stream)

    def streams(self):
        return [StreamSpec(s) for s in self.names]

    def open(self, stream: str, resume_after: int) -> None:
        self.next[stream] = resume_after + 1

    def _fix_ends(self) -> None:
        if not os.path.exists(os.path.join(self.dir, "STOP")):
            return
        for s in self.names:
            if s in self.end or s not in self.next:
                continue
            last = self.next[s] - 1
            tmp = self._end_file(s) + ".tmp"
            with open(tmp, "w") as fh:
                fh.write(str(last))
                fh.flush()
                os.fsync(fh.fileno())
            os.rename(tmp, self._end_file(s))
            self.end[s] = last

    def poll(self, max_events: int, timeout: float):
        self._fix_ends()
        allowed = int((time.monotonic() - self.t0) * self.rate * len(self.names)) - self.sent
        out = []
        budget = min(max_events, max(allowed, 0))
        for s in self.names:
            if s not in self.next or s in self.ended:
                continue
            share = budget // len(self.names) or budget
            end = self.end.get(s)
            while share > 0 and (end is None or self.next[s] <= end):
                i = self.next[s]
                out.append(Message(s, i, payload(s, self.keys, i)))
                self.next[s] = i + 1
                share -= 1
            if end is not None and self.next[s] > end:
                out.append(End(s))
                self.ended.add(s)
        self.sent += sum(1 for m in out if isinstance(m, Message))
        if not out:
            time.sleep(min(timeout, 0.005))
        return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dir")
    p.add_argument("--streams", default="a,b")
    p.add_argument("--keys", type=int, default=50)
    p.add_argument("--rate", type=float, default=2000.0, help="events/s per stream")
    a = p.parse_args()
    return run_source(OracleSource(a.dir, a.streams.split(","), a.keys, a.rate))


if __name__ == "__main__":
    sys.exit(main())
