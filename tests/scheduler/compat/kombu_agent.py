"""A plain Python process (no Django project of its own) on the kombu transport, for the tests:
`python kombu_agent.py URL fanout QUEUE EXCHANGE` binds QUEUE to a fanout exchange and prints the
first message it consumes; `... hold QUEUE SECONDS LOCK_MS` takes one message, holds it unacknowledged
for SECONDS, then acks it. Each step is printed on its own line, flushed, for the test to wait on.
With AGENT_LOGGING set, the agent configures logging of its own first, to its standard output."""
import json
import logging
import os
import sys
import time

from kombu import Connection, Consumer, Exchange, Queue

import scheduler.compat.kombu_transport  # noqa: F401  (the `sluice` alias, as the app's ready() would)


def say(*words):
    print(*words, flush=True)


def fanout(connection, queue_name, exchange_name):
    exchange = Exchange(exchange_name, type="fanout")
    queue = Queue(queue_name, exchange)
    got = []
    with Consumer(connection, [queue], callbacks=[lambda body, message: (got.append(body), message.ack())]):
        say("ready")
        deadline = time.monotonic() + 60
        while not got and time.monotonic() < deadline:
            try:
                connection.drain_events(timeout=1)
            except TimeoutError:
                pass
    say("got", json.dumps(got[0] if got else None))


def hold(connection, queue_name, seconds):
    channel = connection.channel()
    queue = Queue(queue_name)(channel)
    queue.declare()
    deadline = time.monotonic() + 60
    message = None
    while message is None and time.monotonic() < deadline:
        message = queue.get()
        if message is None:
            time.sleep(0.05)
    say("held", json.dumps(message.payload))
    time.sleep(seconds)
    message.ack()
    say("acked")


def main():
    if os.environ.get("AGENT_LOGGING"):
        # A program with logging of its own, as a Celery worker has: Sluice's lines go through it.
        logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="agent %(levelname)s %(name)s: %(message)s")
    url, mode, queue_name, argument, *rest = sys.argv[1:]
    options = {"lock_duration_ms": int(rest[0])} if rest else {}
    with Connection(url, transport_options=options) as connection:
        if mode == "fanout":
            fanout(connection, queue_name, argument)
        else:
            hold(connection, queue_name, float(argument))


if __name__ == "__main__":
    main()
