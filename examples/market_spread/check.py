#!/usr/bin/env python3
"""Checks a Market Spread run: compares the sink file with the output the
model in expected.py computes from the input files.

    python3 check.py out/rejected.bin data

Outputs of different symbols may reach the sink in any interleaving, so the
comparison is of multisets, plus, per symbol, of order. It prints

    outputs N expected N missing N unexpected N out-of-order N malformed N

and "OK", exiting 0, only when the output is exactly right. A record
missing from the output counts as missing, an extra one (a duplicate, or
a record no order should give) as unexpected, and a corrupted one as both.
Out-of-order counts, per symbol, the records that would have to move for
the symbol's records to be in orders-file order (the records not on a
longest run in the expected order). Malformed counts frames that are not a
68-byte output record, or a truncated last frame.
"""

import argparse
import bisect
import sys
from collections import Counter, defaultdict, deque
from dataclasses import dataclass

from expected import Undetermined, expected
from spread_formats import OUTPUT, OUTPUT_SYMBOL, FramingError, FRAME_HEADER


@dataclass
class Report:
    outputs: int = 0
    expected: int = 0
    missing: int = 0
    unexpected: int = 0
    out_of_order: int = 0
    malformed: int = 0

    @property
    def ok(self) -> bool:
        return (self.missing == 0 and self.unexpected == 0
                and self.out_of_order == 0 and self.malformed == 0
                and self.outputs == self.expected)

    def line(self) -> str:
        return (f"outputs {self.outputs} expected {self.expected} "
                f"missing {self.missing} unexpected {self.unexpected} "
                f"out-of-order {self.out_of_order} "
                f"malformed {self.malformed}")


def split_frames(data: bytes) -> tuple[list[bytes], int]:
    """The frames of a sink file and how many bytes trail the last whole
    frame (a truncated frame)."""
    frames = []
    pos = 0
    end = len(data)
    while end - pos >= 4:
        (size,) = FRAME_HEADER.unpack_from(data, pos)
        if end - pos - 4 < size:
            break
        frames.append(data[pos + 4:pos + 4 + size])
        pos += 4 + size
    return frames, end - pos


def longest_increasing(seq: list[int]) -> int:
    """The length of the longest strictly increasing subsequence."""
    tails: list[int] = []
    for x in seq:
        i = bisect.bisect_left(tails, x)
        if i == len(tails):
            tails.append(x)
        else:
            tails[i] = x
    return len(tails)


def by_symbol(records: list[bytes]) -> dict[bytes, list[bytes]]:
    groups: dict[bytes, list[bytes]] = defaultdict(list)
    for r in records:
        groups[r[OUTPUT_SYMBOL]].append(r)
    return groups


def compare(actual: list[bytes], wanted: list[bytes],
            trailing: int = 0) -> Report:
    """Compares the records the sink got with the expected ones."""
    report = Report(outputs=len(actual), expected=len(wanted))
    records = [r for r in actual if len(r) == OUTPUT.size]
    report.malformed = len(actual) - len(records) + (1 if trailing else 0)
    report.unexpected = len(actual) - len(records)

    have = Counter(records)
    want = Counter(wanted)
    report.missing = sum((want - have).values())
    report.unexpected += sum((have - want).values())

    # Per symbol, map each output record to the position of its expected
    # occurrence (duplicates take successive occurrences), then count the
    # records off a longest increasing run of positions.
    wanted_by_symbol = by_symbol(wanted)
    for symbol, got in by_symbol(records).items():
        positions: dict[bytes, deque] = defaultdict(deque)
        for i, r in enumerate(wanted_by_symbol.get(symbol, ())):
            positions[r].append(i)
        order = [positions[r].popleft() for r in got if positions.get(r)]
        report.out_of_order += len(order) - longest_increasing(order)
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="the sink file, e.g. out/rejected.bin")
    parser.add_argument("dir", help="the directory gen.py wrote")
    args = parser.parse_args(argv)
    try:
        wanted = expected(args.dir)
    except (Undetermined, FramingError, OSError) as e:
        print(f"check: cannot compute the expected output: {e}",
              file=sys.stderr)
        return 2
    try:
        with open(args.out, "rb") as f:
            actual, trailing = split_frames(f.read())
    except OSError as e:
        print(f"check: {e}", file=sys.stderr)
        return 2
    report = compare(actual, wanted, trailing)
    print(report.line())
    if trailing:
        print(f"check: {trailing} bytes of a truncated frame at the end",
              file=sys.stderr)
    print("OK" if report.ok else "FAIL")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
