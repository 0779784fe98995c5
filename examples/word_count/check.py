#!/usr/bin/env python3
"""Checks a word count run against the input text.

    python3 check.py out/counts.txt data/text.txt

The output has one line "WORD COUNT" per word occurrence. Words are counted
in parallel, so their lines interleave in any way, but each word's own
lines must read 1, 2, 3... up to the number of times the word occurs in the
input (words are the runs of [a-z'] in the ASCII-lowercased text). Prints
one line of counts,

    lines N words N expected-words N missing N unexpected N \
    bad-sequence N malformed N

the first few problems, then "OK" (exit 0) or "FAIL" (exit 1). Missing counts input words with no
line at all; unexpected, words that are not in the input; bad-sequence,
words whose counts are not exactly 1..true count in order (a lost, repeated,
reordered or wrong count); malformed, lines that are not "WORD COUNT".
"""

import argparse
import re
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field

WORD = re.compile(rb"[a-z']+")
LINE = re.compile(rb"([a-z']+) ([1-9][0-9]*)")


def true_counts(text: bytes) -> Counter:
    """How many times each word occurs in the input."""
    return Counter(WORD.findall(text.lower()))


@dataclass
class Report:
    lines: int = 0
    words: int = 0
    expected_words: int = 0
    missing: int = 0
    unexpected: int = 0
    bad_sequence: int = 0
    malformed: int = 0
    # A few words that went wrong, with what went wrong.
    examples: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.bad_sequence
                    or self.malformed)

    def line(self) -> str:
        return (f"lines {self.lines} words {self.words} "
                f"expected-words {self.expected_words} "
                f"missing {self.missing} unexpected {self.unexpected} "
                f"bad-sequence {self.bad_sequence} "
                f"malformed {self.malformed}")


def compare(output: list[bytes], truth: Counter, examples: int = 5) -> Report:
    report = Report(lines=len(output), expected_words=len(truth))
    seen: dict[bytes, list[int]] = defaultdict(list)
    for line in output:
        m = LINE.fullmatch(line)
        if m is None:
            report.malformed += 1
            if len(report.examples) < examples:
                report.examples.append(f"malformed line {line!r}")
            continue
        seen[m.group(1)].append(int(m.group(2)))
    report.words = len(seen)

    def note(text):
        if len(report.examples) < examples:
            report.examples.append(text)

    for word in truth:
        if word not in seen:
            report.missing += 1
            note(f"{word.decode()!r}: no line, occurs {truth[word]} times")
    for word, counts in seen.items():
        if word not in truth:
            report.unexpected += 1
            note(f"{word.decode()!r}: not in the input")
        elif counts != list(range(1, truth[word] + 1)):
            report.bad_sequence += 1
            shown = counts
            if len(counts) > 8:
                shown = counts[:4] + ["..."] + counts[-3:]
            note(f"{word.decode()!r}: counts {shown}, "
                 f"want 1..{truth[word]}")
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="the sink file")
    parser.add_argument("input", help="the text gen.py wrote")
    args = parser.parse_args(argv)
    try:
        with open(args.out, "rb") as f:
            output = f.read().split(b"\n")
        with open(args.input, "rb") as f:
            truth = true_counts(f.read())
    except OSError as e:
        print(f"check: {e}", file=sys.stderr)
        return 2
    if output and output[-1] == b"":
        output.pop()
    report = compare(output, truth)
    print(report.line())
    for text in report.examples:
        print(f"  {text}")
    print("OK" if report.ok else "FAIL")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
