"""A private RabbitMQ node for tests, and helpers to fill and read queues.

Usable from any test suite (the engine's end-to-end tests too)::

    from broker import Broker, publish, drain, count_by_id

    b = Broker.start(tmp_dir)          # scripts/rabbitmq start tmp_dir
    publish(b.url, "orders", 1000)     # ids 1..1000 in message_id, persistent
    ...
    msgs = drain(b.url, "outputs")     # everything in the queue, acknowledged
    assert count_by_id(msgs) == ...
    b.stop()

Only pika and the standard library; ``scripts/rabbitmq`` does the node.
"""

from __future__ import annotations

import collections
import os
import subprocess
import time
from dataclasses import dataclass
from typing import Callable, Counter, Dict, Iterable, List, NamedTuple, Optional, Union

import pika
import pika.exceptions

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "scripts", "rabbitmq")


@dataclass
class Broker:
    """A node started by scripts/rabbitmq in ``dir``."""

    dir: str
    port: int
    nodename: str

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"

    @classmethod
    def start(cls, dir: str, timeout: float = 120) -> "Broker":
        """Starts (installing rabbitmq-server if missing) and waits until it
        accepts AMQP connections; raises RuntimeError with the script's
        output when it cannot."""
        _script("start", dir, timeout)
        with open(os.path.join(dir, "port")) as f:
            port = int(f.read())
        with open(os.path.join(dir, "nodename")) as f:
            nodename = f.read().strip()
        return cls(dir, port, nodename)

    def stop(self, timeout: float = 60) -> None:
        _script("stop", self.dir, timeout)

    def restart(self, timeout: float = 120) -> None:
        """Stops the node and starts it again on the same port with the same
        data: durable queues and persistent messages survive."""
        _script("restart", self.dir, timeout)

    def stop_app(self) -> None:
        """Stops the RabbitMQ application, not its Erlang VM: every client
        connection is closed and the port refuses new ones, as when the
        broker is down. ``start_app`` starts it again, recovering durable
        queues and persistent messages from disk as a restart does, in
        about 2 s instead of restart's 6."""
        self.rabbitmqctl("stop_app")

    def start_app(self, timeout: float = 60) -> None:
        self.rabbitmqctl("start_app", timeout=timeout)
        wait_for(self.running, timeout, "the broker to accept AMQP connections")

    def restart_app(self) -> None:
        """``stop_app`` then ``start_app``: a broker restart as clients see
        it (connections closed, durable data recovered), for tests that do
        not need a new Erlang VM."""
        self.stop_app()
        self.start_app()

    def running(self) -> bool:
        return subprocess.run([SCRIPT, "status", self.dir], capture_output=True).returncode == 0

    def rabbitmqctl(self, *args: str, timeout: float = 30) -> str:
        """Runs rabbitmqctl against this node (about a second each: the
        CLI starts an Erlang VM)."""
        env = dict(os.environ, HOME=os.path.join(self.dir, "home"))
        r = subprocess.run(
            ["/usr/lib/rabbitmq/bin/rabbitmqctl", "-q", "-n", self.nodename, *args],
            capture_output=True, text=True, timeout=timeout, env=env,
        )
        if r.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {r.stderr.strip()}")
        return r.stdout


def _script(cmd: str, dir: str, timeout: float) -> None:
    r = subprocess.run([SCRIPT, cmd, dir], capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(
            f"scripts/rabbitmq {cmd} {dir} failed (exit {r.returncode}):\n{r.stdout}{r.stderr}"
        )


def connect(url: str) -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.URLParameters(url))


def declare(url: str, queue: str, **arguments) -> None:
    """Declares a durable queue (``arguments``: x-arguments such as
    ``**{"x-max-length": 10}``)."""
    with connect(url) as c:
        c.channel().queue_declare(queue, durable=True, arguments=arguments or None)


def delete(url: str, *queues: str) -> None:
    with connect(url) as c:
        ch = c.channel()
        for q in queues:
            ch.queue_delete(q)


def publish(
    url: str,
    queue: str,
    n: Union[int, Iterable[int]],
    body: Callable[[int], bytes] = lambda i: b"m%d" % i,
    id_header: Optional[str] = None,
    headers: Callable[[int], Optional[Dict[str, object]]] = lambda i: None,
    declare_queue: bool = True,
    confirm: bool = False,
) -> List[int]:
    """Publishes persistent messages to ``queue`` (default exchange): ids
    1..n when ``n`` is an int, else the ids given, in that order. The id
    goes in ``message_id`` (decimal), or in the header ``id_header``.
    Returns the ids.

    When it returns, every message is in the queue: a last synchronous call
    on the channel (a passive declare) is answered only after the broker has
    routed every publish before it (about 20,000 messages/s). ``confirm``
    waits for a publisher confirm after each message instead (on disk, but
    about 2,000 messages/s)."""
    ids = list(range(1, n + 1)) if isinstance(n, int) else list(n)
    with connect(url) as c:
        ch = c.channel()
        if declare_queue:
            ch.queue_declare(queue, durable=True)
        if confirm:
            ch.confirm_delivery()
        for i in ids:
            h = dict(headers(i) or {})
            if id_header is not None:
                h[id_header] = i
            props = pika.BasicProperties(
                delivery_mode=pika.DeliveryMode.Persistent,
                message_id=None if id_header is not None else str(i),
                headers=h or None,
            )
            ch.basic_publish("", queue, body(i), props, mandatory=confirm)
        ch.queue_declare(queue, passive=True)
    return ids


def publish_raw(url: str, queue: str, messages: Iterable[tuple]) -> None:
    """Publishes (body, BasicProperties) pairs as they are."""
    with connect(url) as c:
        ch = c.channel()
        ch.confirm_delivery()
        for body, props in messages:
            ch.basic_publish("", queue, body, props, mandatory=True)


class Received(NamedTuple):
    message_id: Optional[str]
    body: bytes
    properties: pika.BasicProperties
    redelivered: bool


def drain(url: str, queue: str, idle: float = 0.3, timeout: float = 60) -> List[Received]:
    """Takes (and acknowledges) every message of ``queue`` until none has
    come for ``idle`` seconds; returns them in order."""
    out: List[Received] = []
    deadline = time.monotonic() + timeout
    with connect(url) as c:
        ch = c.channel()
        ch.basic_qos(prefetch_count=1000)
        last = acked = 0
        for method, props, body in ch.consume(queue, inactivity_timeout=idle):
            if method is None:
                break
            out.append(Received(props.message_id, body, props, bool(method.redelivered)))
            last = method.delivery_tag
            if len(out) % 500 == 0:
                ch.basic_ack(last, multiple=True)
                acked = last
            if time.monotonic() > deadline:
                break
        if last > acked:  # acking a tag twice closes the channel
            # Only up to the last one taken: deliveries still buffered in
            # pika go back to the queue with cancel().
            ch.basic_ack(last, multiple=True)
        ch.cancel()
    return out


def ready_count(url: str, queue: str) -> int:
    """Messages ready in ``queue`` (not counting those delivered to a
    consumer and not yet acknowledged)."""
    with connect(url) as c:
        return c.channel().queue_declare(queue, passive=True).method.message_count


def count_by_id(
    messages: Iterable[Received],
    key: Callable[[Received], object] = lambda m: int(m.message_id),
) -> Counter:
    """How many times each id was received: the message_id as an int by
    default; ``key`` reads another id (e.g. from the body, for outputs of
    the sink connector, which carry no message_id)."""
    return collections.Counter(key(m) for m in messages)


def wait_for(cond: Callable[[], bool], timeout: float = 10, what: str = "condition") -> None:
    """Polls ``cond`` until it is true; AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)
