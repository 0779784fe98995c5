"""W3's runner: one stateless step, "pass", that emits every payload as it
came. What a run of W3 costs is then the engine, the runner link and the
SDK's batch handling, with no user work to hide them."""

import wallaroo


def identity(payload: bytes) -> bytes:
    return payload


def build() -> wallaroo.Steps:
    steps = wallaroo.Steps()
    steps.computation("pass", identity)
    return steps


if __name__ == "__main__":
    wallaroo.run(build())
