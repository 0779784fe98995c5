#!/usr/bin/env python3
"""Writes English-looking text for the word count example.

    python3 gen.py --lines 10000 --seed 1 --out data/text.txt

Words are drawn from a vocabulary of common English words followed by
made-up ones, with Zipf-like frequencies (the word of rank r comes up about
1/r as often as the most common), so a few words have counts in the
thousands and many are seen once or twice. Lines are sentences with
capitals, commas, contractions, hyphenated pairs and the odd number, to give
the splitter something to do. The same seed gives the same bytes.
"""

import argparse
import itertools
import os
import random
import sys

COMMON = """the of and to a in is it you that he was for on are with as i
his they be at one have this from or had by not word but what some we can
out other were all there when up use your how said an each she which do
their time if will way about many then them write would like so these her
long make thing see him two has look more day could go come did number
sound no most people my over know water than call first who may down side
been now find any new work part take get place made live where after back
little only round man year came show every good me give our under name
very through just form sentence great think say help low line differ turn
cause much mean before move right boy old too same tell does set three
want air well also play small end put home read hand port large spell add
even land here must big high such follow act why ask men change went light
kind off need house picture try us again animal point mother world near
build self earth father""".split()
CONTRACTIONS = ["don't", "it's", "can't", "i'm", "won't", "you're",
                "isn't", "we'll", "they've", "o'clock"]
SYLLABLES = ["ka", "lo", "mi", "ren", "tas", "vo", "zu", "bel", "dor", "fin",
             "gar", "hul", "jen", "kri", "mon", "nax", "pel", "quo", "sar",
             "tul", "ven", "wix", "yor", "zan"]
VOCABULARY = 5000


def vocabulary(rng: random.Random) -> list[str]:
    """COMMON and CONTRACTIONS, shuffled together, then made-up words up to
    VOCABULARY words; the order is the frequency rank."""
    words = COMMON + CONTRACTIONS
    rng.shuffle(words)
    seen = set(words)
    while len(words) < VOCABULARY:
        word = "".join(rng.choice(SYLLABLES)
                       for _ in range(rng.randrange(2, 5)))
        if word not in seen:
            seen.add(word)
            words.append(word)
    return words


def generate(lines: int, seed: int) -> bytes:
    rng = random.Random(seed)
    words = vocabulary(rng)
    cum_weights = list(itertools.accumulate(
        1 / rank for rank in range(1, len(words) + 1)))
    out = []
    for _ in range(lines):
        tokens = rng.choices(words, cum_weights=cum_weights,
                             k=rng.randrange(4, 17))
        for i in range(len(tokens)):
            r = rng.random()
            if r < 0.08:
                tokens[i] += ","
            elif r < 0.10:
                tokens[i] = tokens[i].upper()
            elif r < 0.12:
                tokens[i] += "-" + rng.choice(words[:50])
            elif r < 0.13:
                tokens[i] = str(rng.randrange(1, 3000))
        tokens[0] = tokens[0][:1].upper() + tokens[0][1:]
        tokens[-1] = tokens[-1].rstrip(",")
        out.append(" ".join(tokens) + rng.choice(".....!?") + "\n")
    return "".join(out).encode("ascii")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=10000,
                        help="number of lines (default 10000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", default="data/text.txt",
                        help="file to write (default data/text.txt)")
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
