"""The chaos harness's application (a Python SDK runner).

Every event is "KEY N": the N-th event of KEY, N = 1, 2, 3... The state
step `check` keeps the last N seen per key and emits "KEY N ok" when N is
the previous plus one, "KEY N gap-after-P" otherwise, so a lost, repeated
or reordered event shows in the state step itself as well as in the
output the checker reads.
"""

import wallaroo


class Last:
    """The state per key: the last number seen."""

    def __init__(self) -> None:
        self.n = 0


def check(event: bytes, state: Last) -> bytes:
    key, n = event.split(b" ", 1)
    n = int(n)
    prev, state.n = state.n, n
    if n == prev + 1:
        return b"%s %d ok" % (key, n)
    return b"%s %d gap-after-%d" % (key, n, prev)


def build() -> wallaroo.Steps:
    steps = wallaroo.Steps()
    steps.state_computation("check", check, state=Last)
    return steps


if __name__ == "__main__":
    wallaroo.run(build())
