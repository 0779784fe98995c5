#!/usr/bin/env python3
"""Write the protocol test vectors: NAME.bin and NAME.json for each Frame.

NAME.bin is the encoded Frame (the bytes of one nng message); NAME.json is
its meaning, the protobuf JSON mapping of the Frame as printed by
google.protobuf.json_format with preserving_proto_field_name=True (fields
at their default value are left out, as the mapping says).

The output is deterministic: running this again must give identical files
(sdk-python/tests/test_vectors.py checks it). Needs protoc (to compile
protocol/wallaroo.proto) and the protobuf Python package.

    python3 protocol/vectors/generate.py [--out DIR]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
from types import ModuleType
from typing import Callable, List, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_DIR = os.path.dirname(HERE)


def load_pb() -> ModuleType:
    """Compile wallaroo.proto with protoc into a temporary module."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            ["protoc", "-I", PROTO_DIR, "--python_out=" + tmp,
             os.path.join(PROTO_DIR, "wallaroo.proto")],
            check=True,
        )
        path = os.path.join(tmp, "wallaroo_pb2.py")
        spec = importlib.util.spec_from_file_location("wallaroo_vectors_pb2", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module


def varint(n: int) -> bytes:
    """Protobuf base-128 varint of a non-negative int."""
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def tag(field: int, wire_type: int) -> bytes:
    return varint(field << 3 | wire_type)


def vectors(pb: ModuleType) -> List[Tuple[str, bytes]]:
    """(name, encoded Frame) for every vector, in a fixed order."""
    out: List[Tuple[str, bytes]] = []

    def add(name: str, build: Callable[["pb.Frame"], None]) -> None:
        frame = pb.Frame()
        build(frame)
        out.append((name, frame.SerializeToString()))

    def hello(f):
        h = f.hello
        h.version_major = 1
        h.version_minor = 0
        h.role = pb.ROLE_RUNNER
        h.program = "market-spread"
        h.token = "9f86d081884c7d659a2feaa0c55ad015"
        h.capabilities.extend(["sdk:python/0.1", "steps:check-order,update-nbbo"])
        h.instance = 1
        h.pid = 4242

    def welcome(f):
        w = f.welcome
        w.version_major = 1
        w.version_minor = 0
        w.worker = "worker-0"
        w.incarnation = (1 << 60) + 7  # above 2**53: a string in JSON
        w.max_message_bytes = 16 * 1024 * 1024
        w.max_batch_events = 1024
        w.max_inflight_batches = 4
        w.heartbeat_interval_ms = 1000
        w.initial_credits = 65536

    def refuse(f):
        f.refuse.code = pb.ERROR_CODE_BAD_TOKEN
        f.refuse.message = "token does not match"

    def assign(f):
        f.assign.steps.add(
            step_id=1, name="celsius", function="celsius-to-fahrenheit",
            kind=pb.STEP_KIND_STATELESS,
        )
        f.assign.steps.add(step_id=2, name="key-word", kind=pb.STEP_KIND_KEY_BY)
        f.assign.steps.add(
            step_id=3, name="count", function="count",
            kind=pb.STEP_KIND_STATE, state_name="word-totals",
        )

    def ready(f):
        f.ready.SetInParent()

    def batch(f):
        b = f.batch
        b.batch_id = 17
        b.step_id = 3
        b.events.add(
            key=b"apple", payload=b"\x00\x01\xfe\xff not utf-8",
            event_time=1700000000123456, stream_id=2, message_id=1,
        )
        b.events.add(key=b"pear", payload=b"pear", event_time=-1, stream_id=2, message_id=2)
        b.events.add(key=b"apple", payload=b"", stream_id=2, message_id=(1 << 63) + 3)
        b.events.add(payload=b"unkeyed")  # empty key: unkeyed
        b.states.add(key=b"apple", value=b"\x80\x05K\x02.", present=True)
        b.states.add(key=b"pear", present=False)  # new key: no state yet
        b.states.add(key=b"", value=b"", present=True)  # present but empty

    def reply(f):
        r = f.reply
        r.batch_id = 17
        res = r.results.add()  # two outputs: one keeps the key, one has its own
        res.outputs.add(payload=b"1")
        res.outputs.add(key=b"fruit", has_key=True, payload=b"x", event_time=1700000000999999)
        r.results.add()  # an event with no output (filtered)
        r.results.add(key=b"new-key")  # a key-by result
        r.results.add(error="step 'count' key b'pear': ValueError: bad count")
        res = r.results.add()
        res.outputs.add(key=b"", has_key=True, payload=b"to nobody")  # explicitly unkeyed
        r.states.add(key=b"apple", value=b"\x80\x05K\x03.", present=True)
        r.states.add(key=b"pear", present=False)  # delete

    def credit(f):
        f.credit.events = 4096

    def heartbeat(f):
        f.heartbeat.seq = 42
        f.heartbeat.reply = True

    def heartbeat_reply(f):
        f.heartbeat.seq = 42
        f.heartbeat.reply = False

    def error(f):
        f.error.code = pb.ERROR_CODE_UNKNOWN_STEP
        f.error.message = "no step function 'count'; registered: 'split'"
        f.error.batch_id = 17

    def goodbye(f):
        f.goodbye.reason = "shutdown"

    # The connector part (protocol/README.md section 6).
    def open_stream(f):
        f.open_stream.stream_id = 3
        f.open_stream.name = "orders"
        f.open_stream.resume_hint = 1200

    def stream_opened(f):
        f.stream_opened.stream_id = 3
        f.stream_opened.resume_after = 1250

    def ack(f):
        f.ack.stream_id = 3
        f.ack.up_to = 1500
        f.ack.incarnation = 1700000000000001

    def end_stream(f):
        f.end_stream.stream_id = 3
        f.end_stream.last_id = 2000

    def stream_ended(f):
        f.stream_ended.stream_id = 3
        f.stream_ended.up_to = 2000

    def reconnect(f):
        f.reconnect.address = "tcp://10.0.0.2:7300"
        f.reconnect.reason = "stream moved to worker-1"

    def prepare(f):
        f.prepare.epoch = 12
        f.prepare.checkpoint_id = 12
        f.prepare.incarnation = 1700000000000001

    def prepared(f):
        f.prepared.epoch = 12
        f.prepared.ok = True

    def commit(f):
        f.commit.epoch = 12
        f.commit.checkpoint_id = 12
        f.commit.incarnation = 1700000000000001

    def abort(f):
        f.abort.epoch = 13
        f.abort.checkpoint_id = 13
        f.abort.incarnation = 1700000000000001

    def resolved(f):
        f.resolved.epoch = 12
        f.resolved.committed = True

    def in_doubt(f):
        f.in_doubt.epochs.extend([12, 13])
        f.in_doubt.incarnations.extend([1700000000000001, 1700000000000001])

    for name, build in [
        ("hello", hello),
        ("welcome", welcome),
        ("refuse", refuse),
        ("assign", assign),
        ("ready", ready),
        ("batch", batch),
        ("reply", reply),
        ("credit", credit),
        ("heartbeat", heartbeat),
        ("heartbeat_reply", heartbeat_reply),
        ("error", error),
        ("goodbye", goodbye),
        ("open_stream", open_stream),
        ("stream_opened", stream_opened),
        ("ack", ack),
        ("end_stream", end_stream),
        ("stream_ended", stream_ended),
        ("reconnect", reconnect),
        ("prepare", prepare),
        ("prepared", prepared),
        ("commit", commit),
        ("abort", abort),
        ("resolved", resolved),
        ("in_doubt", in_doubt),
    ]:
        add(name, build)

    # unknown_field: a Welcome from a newer minor version. The Welcome
    # carries field 100 (varint 7) the schema lacks, and the Frame carries
    # field 99 (length-delimited "future"). Both are appended raw.
    welcome_msg = pb.Welcome(version_major=1, version_minor=3, worker="worker-0",
                             max_batch_events=512)
    welcome_bytes = welcome_msg.SerializeToString() + tag(100, 0) + varint(7)
    frame_bytes = (
        tag(2, 2) + varint(len(welcome_bytes)) + welcome_bytes
        + tag(99, 2) + varint(len(b"future")) + b"future"
    )
    out.append(("unknown_field", frame_bytes))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=HERE, help="directory to write to")
    args = parser.parse_args()
    pb = load_pb()
    from google.protobuf import json_format

    os.makedirs(args.out, exist_ok=True)
    for name, data in vectors(pb):
        frame = pb.Frame()
        frame.ParseFromString(data)
        text = json_format.MessageToJson(
            frame, preserving_proto_field_name=True, indent=2
        )
        with open(os.path.join(args.out, name + ".bin"), "wb") as f:
            f.write(data)
        with open(os.path.join(args.out, name + ".json"), "w", encoding="utf-8") as f:
            f.write(text + "\n")
    print(f"wrote {len(vectors(pb))} vectors to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
