#!/usr/bin/env python3
"""Market Spread over RabbitMQ: put the generated records in the queues,
and take the results out.

    rabbitmq.py feed DIR        publish DIR/nbbo.bin and DIR/orders.bin to
                                market-spread-nbbo and market-spread-orders
    rabbitmq.py wait N          wait until market-spread-rejected holds N
    rabbitmq.py collect FILE    move market-spread-rejected into FILE,
                                length-framed like the file sink writes it

The broker is RABBITMQ_URL (default amqp://guest:guest@127.0.0.1:5672/%2F).
Each record is one persistent message whose message_id is its record number
in its file, from 1: the stable, increasing id the source connector needs
(connectors/rabbitmq_source/README.md).
"""
import argparse
import os
import struct
import sys
import time

import pika

URL = os.environ.get("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
QUEUES = {"nbbo.bin": "market-spread-nbbo", "orders.bin": "market-spread-orders"}
RESULTS = "market-spread-rejected"


def records(path):
    with open(path, "rb") as f:
        data = f.read()
    i = 0
    while i < len(data):
        (n,) = struct.unpack_from(">I", data, i)
        yield data[i + 4:i + 4 + n]
        i += 4 + n


def feed(directory):
    with pika.BlockingConnection(pika.URLParameters(URL)) as c:
        ch = c.channel()
        for name, queue in QUEUES.items():
            ch.queue_declare(queue, durable=True)
            n = 0
            for n, rec in enumerate(records(os.path.join(directory, name)), 1):
                ch.basic_publish("", queue, rec, pika.BasicProperties(
                    delivery_mode=pika.DeliveryMode.Persistent, message_id=str(n)))
            # A synchronous call returns once every publish before it is in.
            ch.queue_declare(queue, durable=True, passive=True)
            print(f"rabbitmq: {n} records from {name} in {queue}")
        ch.queue_declare(RESULTS, durable=True)


def count(ch):
    return ch.queue_declare(RESULTS, durable=True, passive=True).method.message_count


def wait(n, timeout):
    deadline = time.monotonic() + timeout
    with pika.BlockingConnection(pika.URLParameters(URL)) as c:
        ch = c.channel()
        while count(ch) < n:
            if time.monotonic() > deadline:
                print(f"rabbitmq: {count(ch)} of {n} results after {timeout}s", file=sys.stderr)
                return 1
            time.sleep(0.2)
    print(f"rabbitmq: {n} results in {RESULTS}")
    return 0


def collect(path):
    n = 0
    with pika.BlockingConnection(pika.URLParameters(URL)) as c, open(path, "wb") as out:
        ch = c.channel()
        while True:
            method, _, body = ch.basic_get(RESULTS)
            if method is None:
                break
            out.write(struct.pack(">I", len(body)) + body)
            ch.basic_ack(method.delivery_tag)
            n += 1
    print(f"rabbitmq: {n} results written to {path}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("feed").add_argument("dir")
    w = sub.add_parser("wait")
    w.add_argument("n", type=int)
    w.add_argument("--timeout", type=float, default=300)
    sub.add_parser("collect").add_argument("file")
    a = p.parse_args()
    if a.cmd == "feed":
        feed(a.dir)
    elif a.cmd == "wait":
        return wait(a.n, a.timeout)
    else:
        collect(a.file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
