"""Reads the committed output of the oracle application and reports, per
key, the numbers lost, duplicated and out of order."""

import collections
from typing import Dict, NamedTuple


class Report(NamedTuple):
    outputs: int
    lost: int
    duplicated: int
    out_of_order: int
    gaps: int          # outputs where the state step itself saw a gap
    unexpected: int    # outputs of keys or numbers never sent
    examples: list

    def clean(self) -> bool:
        return not (self.lost or self.duplicated or self.out_of_order or self.gaps
                    or self.unexpected)


def expected_counts(ends: Dict[str, int], keys: int, file_counts: Dict[bytes, int]):
    """Events per key: stream S's ids 1..ends[S] spread over KEYS keys,
    plus the file source's keys."""
    want = dict(file_counts)
    for s, last in ends.items():
        for k in range(keys):
            n = (last - k + keys - 1) // keys if last > k else 0
            if n:
                want[b"%s%03d" % (s.encode(), k)] = n
    return want


def check(path: str, want: Dict[bytes, int]) -> Report:
    seen = collections.defaultdict(list)
    gaps = unexpected = outputs = 0
    examples = []
    with open(path, "rb") as fh:
        for line in fh:
            outputs += 1
            parts = line.split()
            if len(parts) != 3 or not parts[1].isdigit():
                unexpected += 1
                examples.append("malformed %r" % line[:60])
                continue
            if parts[2] != b"ok":
                gaps += 1
                if len(examples) < 10:
                    examples.append("%s %s %s" % tuple(p.decode() for p in parts))
            seen[parts[0]].append(int(parts[1]))
    lost = duplicated = out_of_order = 0
    for key, nums in seen.items():
        n = want.get(key, 0)
        c = collections.Counter(nums)
        bad = sum(v for x, v in c.items() if not 1 <= x <= n)
        unexpected += bad
        duplicated += sum(v - 1 for x, v in c.items() if 1 <= x <= n and v > 1)
        out_of_order += sum(1 for a, b in zip(nums, nums[1:]) if b < a)
        if bad and len(examples) < 10:
            examples.append("%s: numbers beyond the %d sent" % (key.decode(), n))
    for key, n in want.items():
        got = set(seen.get(key, ()))
        missing = sum(1 for x in range(1, n + 1) if x not in got)
        lost += missing
        if missing and len(examples) < 10:
            examples.append("%s: %d of %d lost" % (key.decode(), missing, n))
    return Report(outputs, lost, duplicated, out_of_order, gaps, unexpected, examples)
