"""What both RabbitMQ sinks (rabbitmq_sink.py, rabbitmq_sink_2pc.py) share:
the log line and reconnecting with backoff."""

import sys
import time
from typing import Callable, MutableMapping, Optional, Type


def log(message: str) -> None:
    """One line on stderr, with a stable tag at the start of ``message``."""
    try:
        sys.stderr.write("rabbitmq-sink: " + message.replace("\n", "\\n") + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


class Backoff:
    """Reconnect attempts 0.1 s apart at first, doubling up to 2 s; the
    wait starts over after a success."""

    def __init__(self) -> None:
        self.wait = 0.1

    def connect(self, attempt: Callable[[], Optional[str]], budget: float,
                stats: MutableMapping[str, int], counter: str,
                error: Type[Exception]) -> None:
        """Calls ``attempt`` (None: connected, else why not) until it
        succeeds, counting each failure in ``stats[counter]``; raises
        ``error`` once ``budget`` seconds are spent."""
        deadline = time.monotonic() + budget
        while True:
            why = attempt()
            if why is None:
                self.wait = 0.1
                return
            stats[counter] = stats.get(counter, 0) + 1
            wait = min(self.wait, deadline - time.monotonic())
            if wait <= 0:
                raise error(f"cannot reach the broker: {why}")
            log(f"RMQ-CONNECT failed ({why}); retrying in {wait:.1f} s")
            time.sleep(wait)
            self.wait = min(2.0, self.wait * 2)
