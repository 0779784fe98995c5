"""The shared protocol vectors (protocol/vectors) decode and re-encode exactly."""

import filecmp
import os
import shutil
import subprocess
import sys

import pytest
from google.protobuf import json_format

from wallaroo._pb import wallaroo_pb2 as pb

SDK = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VECTORS = os.path.join(os.path.dirname(SDK), "protocol", "vectors")

EXPECTED = sorted([
    "assign", "batch", "credit", "error", "goodbye", "heartbeat",
    "heartbeat_reply", "hello", "ready", "refuse", "reply", "unknown_field",
    "welcome",
    # the connector part (protocol/README.md section 6)
    "open_stream", "stream_opened", "ack", "end_stream", "stream_ended",
    "reconnect", "prepare", "prepared", "commit", "abort", "resolved", "in_doubt",
])
UNKNOWN_FIELD = "unknown_field"


def names():
    return sorted(f[:-4] for f in os.listdir(VECTORS) if f.endswith(".bin"))


def load(name):
    with open(os.path.join(VECTORS, name + ".bin"), "rb") as f:
        data = f.read()
    with open(os.path.join(VECTORS, name + ".json"), encoding="utf-8") as f:
        text = f.read()
    return data, text


def test_every_expected_vector_exists_with_its_json():
    assert names() == EXPECTED
    for name in EXPECTED:
        assert os.path.exists(os.path.join(VECTORS, name + ".json")), name


@pytest.mark.parametrize("name", [n for n in EXPECTED if n != UNKNOWN_FIELD])
def test_vector_decodes_to_its_json_and_reencodes_identically(name):
    data, text = load(name)
    decoded = pb.Frame.FromString(data)
    expected = json_format.Parse(text, pb.Frame())
    assert decoded == expected
    assert decoded.WhichOneof("body") is not None
    assert decoded.SerializeToString() == data
    assert expected.SerializeToString() == data


def test_unknown_fields_are_skipped_when_decoding():
    data, text = load(UNKNOWN_FIELD)
    decoded = pb.Frame.FromString(data)
    expected = json_format.Parse(text, pb.Frame())
    # Known fields equal what the JSON says...
    assert decoded.welcome.version_minor == 3
    assert decoded.welcome.worker == "worker-0"
    assert json_format.MessageToDict(decoded, preserving_proto_field_name=True) == (
        json_format.MessageToDict(expected, preserving_proto_field_name=True)
    )
    # ...and the unknown ones are there but not known: the JSON's encoding is
    # shorter than the vector.
    assert len(expected.SerializeToString()) < len(data)
    # Python keeps unknown fields, so re-encoding gives the same bytes.
    assert decoded.SerializeToString() == data


def test_batch_vector_covers_the_edge_cases_it_claims():
    batch = pb.Frame.FromString(load("batch")[0]).batch
    assert [s.present for s in batch.states] == [True, False, True]
    assert min(e.event_time for e in batch.events) < 0
    assert max(e.message_id for e in batch.events) > 2**63


@pytest.mark.skipif(shutil.which("protoc") is None, reason="generate.py needs protoc")
def test_generator_reproduces_the_committed_vectors(tmp_path):
    subprocess.run(
        [sys.executable, os.path.join(VECTORS, "generate.py"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    generated = sorted(os.listdir(tmp_path))
    committed = sorted(f for f in os.listdir(VECTORS) if f.endswith((".bin", ".json")))
    assert generated == committed
    match, mismatch, errors = filecmp.cmpfiles(VECTORS, tmp_path, generated, shallow=False)
    assert mismatch == [] and errors == []
