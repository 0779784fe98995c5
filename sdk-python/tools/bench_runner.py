"""Measure events/s through a real runner process, over nng ipc.

A minimal engine in this process spawns a runner (trivial computation or
trivial state computation), does the handshake, then keeps ``--inflight``
batches of ``--events`` events in flight for ``--seconds`` and counts the
replies. The engine side only sends pre-encoded frames and receives replies
without decoding them, so most of the CPU goes to the runner; on a 2-core
box both still share the machine.

    python3 sdk-python/tools/bench_runner.py [--step count] [--seconds 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

import pynng

SDK = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, SDK)

from wallaroo._pb import wallaroo_pb2 as pb  # noqa: E402

RUNNER = """
import wallaroo

class Counter:
    def __init__(self):
        self.n = 0

def count(data, state):
    state.n += 1

steps = wallaroo.Steps()
steps.computation("identity", lambda data: data)
steps.state_computation("count", count, state=Counter)
wallaroo.run(steps)
"""


def frame(**body) -> bytes:
    (name, message), = body.items()
    f = pb.Frame()
    getattr(f, name).CopyFrom(message)
    return f.SerializeToString()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--step", choices=["identity", "count"], default="identity")
    parser.add_argument("--events", type=int, default=1024)
    parser.add_argument("--keys", type=int, default=64)
    parser.add_argument("--inflight", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()

    directory = tempfile.mkdtemp(prefix="wl-bench-")
    addr = f"ipc://{directory}/engine.sock"
    sock = pynng.Pair1(recv_timeout=10000, send_timeout=10000)
    sock.listen(addr)
    env = dict(os.environ, PYTHONPATH=SDK, WALLAROO_ENGINE_ADDR=addr,
               WALLAROO_TOKEN="bench", WALLAROO_PROGRAM="bench", WALLAROO_INSTANCE="0")
    proc = subprocess.Popen([sys.executable, "-c", RUNNER], env=env)
    try:
        pb.Frame.FromString(sock.recv())  # Hello
        sock.send(frame(welcome=pb.Welcome(version_major=1, max_message_bytes=1 << 24)))
        kind = pb.STEP_KIND_STATE if args.step == "count" else pb.STEP_KIND_STATELESS
        sock.send(frame(assign=pb.AssignSteps(steps=[
            pb.StepSpec(step_id=1, name=args.step, kind=kind)])))
        assert pb.Frame.FromString(sock.recv()).WhichOneof("body") == "ready"

        batch = pb.Batch(batch_id=1, step_id=1)
        for i in range(args.events):
            batch.events.add(key=b"key-%04d" % (i % args.keys), payload=b"payload-%012d" % i)
        if kind == pb.STEP_KIND_STATE:
            # Every key is new in every batch (present=false): the runner
            # makes, and sends back, 64 states per batch.
            for k in range(args.keys):
                batch.states.add(key=b"key-%04d" % k)
        data = frame(batch=batch)

        for _ in range(args.inflight):
            sock.send(data)
        replies = 0
        start = time.perf_counter()
        while time.perf_counter() - start < args.seconds:
            sock.recv()
            replies += 1
            sock.send(data)
        elapsed = time.perf_counter() - start
        print(f"{args.step}: {replies * args.events / elapsed:,.0f} events/s "
              f"({args.events} events/batch, {args.inflight} in flight, "
              f"{len(data)} bytes/batch)")
        sock.send(frame(goodbye=pb.Goodbye(reason="bench over")))
        proc.wait(timeout=10)
    finally:
        sock.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
