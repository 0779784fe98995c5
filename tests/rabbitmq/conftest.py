"""One private RabbitMQ node for the whole session (scripts/rabbitmq), and
import paths for the SDK, the connectors and the broker helpers."""

import itertools
import os
import signal
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
for path in (
    HERE,
    os.path.join(ROOT, "sdk-python"),
    # The SDK's fake engine (connector_engine.py), for test_processes.py.
    os.path.join(ROOT, "sdk-python", "tests"),
    os.path.join(ROOT, "connectors", "rabbitmq_source"),
    os.path.join(ROOT, "connectors", "rabbitmq_sink"),
):
    if path not in sys.path:
        sys.path.insert(0, path)

import broker  # noqa: E402

_names = itertools.count(1)


@pytest.fixture(scope="session")
def rabbit(tmp_path_factory):
    """The node, started once (installing rabbitmq-server if missing) and
    stopped at the end of the session."""
    # SIGTERM (a CI timeout, `timeout`) would end pytest without teardown
    # and leave the node running: make it an interrupt, which pytest turns
    # into a clean end, this fixture's finalizer included.
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt)
    b = broker.Broker.start(str(tmp_path_factory.mktemp("rabbitmq")))
    try:
        yield b
    finally:
        b.stop()


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture
def queue(rabbit, request):
    """A fresh durable queue named after the test, deleted afterwards."""
    name = f"{request.node.name[:80]}-{next(_names)}"
    broker.declare(rabbit.url, name)
    yield name
    try:
        broker.delete(rabbit.url, name)
    except Exception:
        pass  # the broker is down at the end of a failed restart test
