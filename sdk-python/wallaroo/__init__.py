"""Wallaroo Python SDK: write the steps of a Wallaroo pipeline in Python.

A runner program registers plain functions under stable step names in a
:class:`Steps`, then hands it to :func:`run`, which serves them to the
``wallaroo-engine`` that spawned the process::

    import wallaroo

    def main() -> None:
        steps = wallaroo.Steps()
        steps.computation("shout", lambda data: data.upper())
        wallaroo.run(steps)

    if __name__ == "__main__":
        main()

``wallaroo.testing`` runs the same steps in-process, without an engine.
"""

__version__ = "0.1.0"

from .codecs import JsonCodec, PickleCodec, StateCodec
from .output import Output
from .runner import run
from .steps import Step, Steps

__all__ = [
    "Steps",
    "Step",
    "Output",
    "run",
    "StateCodec",
    "PickleCodec",
    "JsonCodec",
    "__version__",
]
