"""Fixtures of the connector conformance suite: the real engine (the
harness of tests/engine), and the kits of kits.py."""
import importlib.util
import os
import sys

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


# -- what some kits need (kits.py: ``needs``), set up once per session ----

ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
for _path in (os.path.join(ROOT, "tests", "rabbitmq"), os.path.join(ROOT, "sdk-python")):
    if _path not in sys.path:
        sys.path.insert(0, _path)


@pytest.fixture(scope="session")
def rabbit(tmp_path_factory):
    """A private RabbitMQ node (scripts/rabbitmq), started only when a
    RabbitMQ kit runs, stopped at the end of the session."""
    import broker
    b = broker.Broker.start(str(tmp_path_factory.mktemp("rabbitmq")))
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture(scope="session")
def go_build(tmp_path_factory):
    """go_build(module_dir): the path of its program, built once."""
    from kits import go_build as build
    out = str(tmp_path_factory.mktemp("go-bin"))
    built = {}

    def get(module_dir):
        if module_dir not in built:
            built[module_dir] = build(module_dir, out)
        return built[module_dir]

    return get


@pytest.fixture(autouse=True)
def kit_needs(request):
    """Hands a kit what it ``needs`` before its test runs."""
    callspec = getattr(request.node, "callspec", None)
    kit = callspec.params.get("kit") if callspec else None
    needs = getattr(kit, "needs", ())
    if needs:
        kit.use(**{name: request.getfixturevalue(name) for name in needs})
