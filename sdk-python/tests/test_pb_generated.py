"""The committed wallaroo_pb2.py must be what protoc makes of the schema."""

import os
import shutil
import subprocess

import pytest

SDK = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.dirname(SDK)
PROTO = os.path.join(ROOT, "protocol", "wallaroo.proto")
COMMITTED = os.path.join(SDK, "wallaroo", "_pb", "wallaroo_pb2.py")


@pytest.mark.skipif(
    shutil.which("protoc") is None,
    reason="protoc is not installed, so the committed wallaroo_pb2.py cannot be "
    "compared with a fresh one (install protobuf-compiler to run this check)",
)
def test_committed_pb2_matches_what_protoc_generates_now(tmp_path):
    subprocess.run(
        ["protoc", "-I", os.path.dirname(PROTO), f"--python_out={tmp_path}", PROTO],
        check=True,
    )
    fresh = (tmp_path / "wallaroo_pb2.py").read_bytes()
    with open(COMMITTED, "rb") as f:
        committed = f.read()
    assert committed == fresh, (
        "sdk-python/wallaroo/_pb/wallaroo_pb2.py is stale: run sdk-python/tools/gen_pb.sh"
    )


def test_generated_module_has_every_frame_body():
    from wallaroo._pb import wallaroo_pb2 as pb

    bodies = [f.name for f in pb.Frame.DESCRIPTOR.oneofs_by_name["body"].fields]
    assert bodies == [
        "hello", "welcome", "refuse", "assign", "ready", "batch",
        "reply", "credit", "heartbeat", "error", "goodbye",
        "open_stream", "stream_opened", "ack", "end_stream", "stream_ended",
        "reconnect", "prepare", "prepared", "commit", "abort", "resolved", "in_doubt",
    ]
