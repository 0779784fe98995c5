#!/usr/bin/env python3
"""Writes temperatures in degrees Celsius, one decimal number a line.

    python3 gen.py --lines 100000 --seed 1 --out data/celsius.txt

Values run from -100 to 100 with 0 to 3 decimals, a minus sign where
negative. The same seed gives the same bytes.
"""

import argparse
import os
import random
import sys


def generate(lines: int, seed: int) -> bytes:
    rng = random.Random(seed)
    out = []
    for _ in range(lines):
        decimals = rng.randrange(4)
        scale = 10 ** decimals
        value = rng.randrange(-100 * scale, 100 * scale + 1)
        sign = "-" if value < 0 else ""
        whole, frac = divmod(abs(value), scale)
        if decimals:
            out.append(f"{sign}{whole}.{frac:0{decimals}d}\n")
        else:
            out.append(f"{sign}{whole}\n")
    return "".join(out).encode("ascii")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=100000,
                        help="number of lines (default 100000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", default="data/celsius.txt",
                        help="file to write (default data/celsius.txt)")
    args = parser.parse_args(argv)
    if args.lines < 0:
        parser.error("--lines must not be negative")
    directory = os.path.dirname(args.out)
    if directory:
        os.makedirs(directory, exist_ok=True)
    with open(args.out, "wb") as f:
        f.write(generate(args.lines, args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
