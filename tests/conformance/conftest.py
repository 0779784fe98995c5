"""Fixtures of the connector conformance suite: the real engine (the
harness of tests/engine), and the kits of kits.py."""
import importlib.util
import os

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location(
    "wl_engine_harness", os.path.join(HERE, "..", "engine", "conftest.py"))
harness = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(harness)


@pytest.fixture
def engine(tmp_path):
    started = []

    def start(topology, *extra):
        path = tmp_path / "topology.yaml"
        path.write_text(topology)
        e = harness.Engine(["--topology", str(path)] + list(extra), cwd=str(tmp_path))
        started.append(e)
        return e

    yield start
    for e in started:
        e.kill()
