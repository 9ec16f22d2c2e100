"""A steady stream from a process of its own, for the wake-up tests: single sends at one rate, and
outbox publishes and delayed sends at another, for a fixed time.

    python tests/acceptance/stream_agent.py --rate R --seconds S --topic T
        [--side-rate R2 --outbox-topic O --delayed-topic D]

Django is set up from the environment (DATABASE_URL). The i-th send is due at start + i / rate
(late ones go at once, none is skipped); every (rate / side-rate)th send is followed by a publish
and a delayed send. Prints one line: `sent N published N delayed N`.
"""
import argparse
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django  # noqa: E402

django.setup()

from django.db import transaction  # noqa: E402

from outbox import outbox  # noqa: E402
from queueing import producer  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--side-rate", type=float, default=0)
    parser.add_argument("--outbox-topic")
    parser.add_argument("--delayed-topic")
    args = parser.parse_args()
    sent = published = delayed = 0
    steps = int(args.rate * args.seconds)
    every = round(args.rate / args.side_rate) if args.side_rate else 0
    start = time.monotonic()
    for step in range(steps):
        pause = start + step / args.rate - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        key = str(random.randrange(97)).encode()
        producer.send(args.topic, f"{step}".encode(), key=key, acks="all")
        sent += 1
        if not every or step % every:
            continue
        if args.outbox_topic:
            with transaction.atomic():
                outbox.publish(aggregate_type="stream", aggregate_id=str(step % 97), event_type="step",
                               payload={"step": step}, destination=f"sluice:{args.outbox_topic}")
            published += 1
        if args.delayed_topic:
            producer.send(args.delayed_topic, f"{step}".encode(), key=key, delay=random.uniform(0.05, 0.3))
            delayed += 1
    print(f"sent {sent} published {published} delayed {delayed}", flush=True)


if __name__ == "__main__":
    main()
