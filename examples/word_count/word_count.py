"""Word count: how many times each word has been seen so far.

Three steps, all in this runner:

- `split` (stateless) lowercases a line of text and emits its words: the
  runs of letters a-z and apostrophes, so "Don't" is the word "don't" and
  "well-known" is "well" and "known".
- `key-word` keys each word by itself, so every occurrence of a word
  reaches the same state.
- `count-word` (state `word-count`) adds one to the word's count and emits
  "WORD COUNT".

Lowercasing is ASCII only, done on the bytes: a line is never decoded, so
text that is not UTF-8 cannot fail the step, and a non-ASCII letter simply
ends a word.
"""

import re

import wallaroo

WORD = re.compile(rb"[a-z']+")


def split(line: bytes) -> list[bytes]:
    return WORD.findall(line.lower())


def key_word(word: bytes) -> bytes:
    return word


class WordCount:
    """The state kept per word."""

    def __init__(self) -> None:
        self.count = 0


def count_word(word: bytes, state: WordCount) -> bytes:
    state.count += 1
    return b"%s %d" % (word, state.count)


def build() -> wallaroo.Steps:
    steps = wallaroo.Steps()
    steps.computation_multi("split", split)
    steps.key_by("key-word", key_word)
    steps.state_computation("count-word", count_word, state=WordCount)
    return steps


if __name__ == "__main__":
    wallaroo.run(build())
