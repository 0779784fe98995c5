#!/usr/bin/env python3
"""Checks a Celsius run: line K of the output must be line K of the input
converted to Fahrenheit (F = C * 1.8 + 32, two decimals).

    python3 check.py out/fahrenheit.txt data/celsius.txt

The output must keep the input's order: the events are unkeyed, and the
engine keeps a source's order for unkeyed events. Prints

    outputs N inputs N wrong N

plus the first few wrong lines, then "OK" (exit 0) or "FAIL" (exit 1).
"""

import argparse
import sys
from dataclasses import dataclass, field


def fahrenheit(celsius_line: bytes) -> bytes:
    """The output line the application must write for an input line."""
    return b"%.2f" % (float(celsius_line) * 1.8 + 32)


def lines(data: bytes) -> list[bytes]:
    """The lines of a file, as the engine's line framing reads them."""
    result = data.split(b"\n")
    if result and result[-1] == b"":
        result.pop()
    return result


@dataclass
class Report:
    outputs: int = 0
    inputs: int = 0
    wrong: int = 0
    # (line number, got, wanted) of the first wrong lines.
    examples: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.wrong == 0 and self.outputs == self.inputs

    def line(self) -> str:
        return (f"outputs {self.outputs} inputs {self.inputs} "
                f"wrong {self.wrong}")


def compare(output: list[bytes], inputs: list[bytes],
            examples: int = 5) -> Report:
    """Compares output lines with input lines, position by position.

    A line in one file without a counterpart in the other counts as wrong
    too, so a missing line fails even at the end."""
    report = Report(outputs=len(output), inputs=len(inputs))
    for i in range(max(len(output), len(inputs))):
        got = output[i] if i < len(output) else None
        try:
            want = fahrenheit(inputs[i]) if i < len(inputs) else None
        except ValueError:
            want = b"<input is not a number>"
        if got != want:
            report.wrong += 1
            if len(report.examples) < examples:
                report.examples.append((i + 1, got, want))
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="the sink file")
    parser.add_argument("input", help="the Celsius file gen.py wrote")
    args = parser.parse_args(argv)
    try:
        with open(args.out, "rb") as f:
            output = lines(f.read())
        with open(args.input, "rb") as f:
            inputs = lines(f.read())
    except OSError as e:
        print(f"check: {e}", file=sys.stderr)
        return 2
    report = compare(output, inputs)
    print(report.line())
    for number, got, want in report.examples:
        print(f"  line {number}: got {got!r}, want {want!r}")
    print("OK" if report.ok else "FAIL")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
