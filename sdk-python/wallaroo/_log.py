"""One-line log messages on stderr, prefixed with the program and instance.

Every line reads ``wallaroo-sdk[program/instance]: message``. The runner
sets the prefix once it has read its environment; before that it is
``wallaroo-sdk[?/?]``.
"""

from __future__ import annotations

import sys

_prefix = "wallaroo-sdk[?/?]: "


def set_identity(program: str, instance: str) -> None:
    """Name the program and instance in every later line."""
    global _prefix
    _prefix = f"wallaroo-sdk[{program}/{instance}]: "


def log(message: str) -> None:
    """Write ``message`` to stderr as one line (newlines are escaped)."""
    line = _prefix + message.replace("\r", "\\r").replace("\n", "\\n") + "\n"
    try:
        sys.stderr.write(line)
        sys.stderr.flush()
    except (OSError, ValueError):
        # stderr closed or gone: logging must never take the runner down.
        pass
