"""Make the SDK, its fake engine (sdk-python/tests/connector_engine.py) and
the connector's module importable."""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
for path in (
    os.path.dirname(HERE),
    os.path.join(ROOT, "sdk-python", "tests"),
    os.path.join(ROOT, "sdk-python"),
):
    if path not in sys.path:
        sys.path.insert(0, path)
