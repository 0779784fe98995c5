"""Measure events/s of the batch-processing function alone.

Runs ``wallaroo._core.encode_reply`` (the user code and the reply's bytes)
over a synthetic batch of 1024 events (20-byte payloads, 64 distinct keys)
for a trivial computation and a trivial state computation, and prints the
best of several rounds. With ``--wire`` it also counts parsing the Batch
frame, which the runner does before every call, and takes the runner's
path: the C one (``_core.fast_reply``) when it is built, unless
``WALLAROO_SDK_PURE=1``.

    python3 sdk-python/tools/bench_batch.py [--events 1024] [--rounds 7] [--wire]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

# Run from a checkout without installing: the SDK is the parent directory.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import wallaroo  # noqa: E402
from wallaroo._core import encode_reply, fast_reply, plan  # noqa: E402
from wallaroo._pb import wallaroo_pb2 as pb  # noqa: E402


class Counter:
    """A trivial state: how many events a key has seen."""

    def __init__(self) -> None:
        self.n = 0


def count(data: bytes, state: Counter) -> None:
    state.n += 1


def make_batch(events: int, keys: int) -> "pb.Batch":
    batch = pb.Batch(batch_id=1, step_id=1)
    for i in range(events):
        ev = batch.events.add()
        ev.key = b"key-%04d" % (i % keys)
        ev.payload = b"payload-%012d" % i
    return batch


def with_states(batch: "pb.Batch", step: wallaroo.Step, keys: int) -> "pb.Batch":
    """The batch as the engine sends it once every key has state."""
    out = pb.Batch()
    out.CopyFrom(batch)
    codec = step.state_codec
    for k in range(keys):
        state = Counter()
        state.n = 100
        out.states.add(key=b"key-%04d" % k, value=codec.dumps(state), present=True)
    return out


def measure(step: wallaroo.Step, batch: "pb.Batch", rounds: int, wire: bool) -> float:
    frame = pb.Frame()
    frame.batch.CopyFrom(batch)
    data = frame.SerializeToString()
    n = len(batch.events)
    plans = {batch.step_id: plan(step)}
    best = float("inf")
    for _ in range(rounds):
        reps = 0
        start = time.perf_counter()
        while True:
            if wire and fast_reply is not None:
                fast_reply(data, plans)  # as the runner does
            elif wire:
                f = pb.Frame()
                f.ParseFromString(data)
                encode_reply(step, f.batch)  # as the runner does
            else:
                encode_reply(step, batch)
            reps += 1
            elapsed = time.perf_counter() - start
            if elapsed > 0.2:
                break
        best = min(best, elapsed / reps)
    return n / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1024)
    parser.add_argument("--keys", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--wire", action="store_true", help="include parse + serialize")
    args = parser.parse_args()

    steps = wallaroo.Steps()
    steps.computation("identity", lambda data: data)
    steps.state_computation("count", count, state=Counter)
    batch = make_batch(args.events, args.keys)

    stateless = measure(steps.get("identity"), batch, args.rounds, args.wire)
    stateful = measure(
        steps.get("count"), with_states(batch, steps.get("count"), args.keys),
        args.rounds, args.wire,
    )
    what = "encode_reply"
    if args.wire:
        what = "fast_reply (C)" if fast_reply is not None else "parse + encode_reply"
    print(f"{what}, {args.events} events/batch, {args.keys} keys:")
    print(f"  computation (return data):           {stateless:>12,.0f} events/s")
    print(f"  state_computation (state.n += 1):    {stateful:>12,.0f} events/s")


if __name__ == "__main__":
    main()
