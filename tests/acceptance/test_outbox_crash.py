"""Invariant 5 with real processes: relays are killed with SIGKILL while a generator publishes, some
of its transactions rolled back. Afterwards every committed event has been delivered (exactly once to
the Sluice topic, at least once to RabbitMQ), in order per aggregate, and no event of a rolled-back
transaction anywhere."""
import json
import random
import signal
import subprocess
import sys
import time
import uuid

import kombu
import pytest

from outbox import brokers, destinations, models  # noqa: F401 - brokers registers the CloudEvents decoder
from queueing import models as queueing_models
from queueing import topics
from tests.conftest import ROOT

pytestmark = [pytest.mark.acceptance, pytest.mark.django_db(transaction=True)]

TOPIC = "acc.outbox"
AGGREGATES = 24  # even ones go to the Sluice topic, odd ones to RabbitMQ
TRANSACTIONS = 700


class Rollback(Exception):
    pass


def generate(transactions, exchange, seed):
    """The generator, run in its own process: transactions of 1-3 events of one aggregate, every
    seventh rolled back; prints what committed as JSON."""
    from django.db import transaction

    from outbox import outbox

    rng = random.Random(seed)
    counters, committed, rolled_back = {}, 0, 0
    for number in range(transactions):
        aggregate = rng.randrange(AGGREGATES)
        destination = f"sluice:{TOPIC}" if aggregate % 2 == 0 else f"amqp:{exchange}/acc"
        rollback, count, first = number % 7 == 3, rng.randint(1, 3), counters.get(f"g{aggregate}", 0)
        try:
            with transaction.atomic():
                for k in range(count):
                    outbox.publish(aggregate_type="acc", aggregate_id=f"g{aggregate}", event_type="acc.step",
                                   payload={"n": first + k, "txn": number, "rollback": rollback},
                                   destination=destination)
                if rollback:
                    raise Rollback
            counters[f"g{aggregate}"] = first + count
            committed += count
        except Rollback:
            rolled_back += count
        time.sleep(0.006)  # pace the load so the kills land mid-stream
    print(json.dumps({"committed": committed, "rolled_back": rolled_back, "counters": counters}))


def relay(env, folder):
    """Start a relay process logging to a file of its own (to tell when its loop runs)."""
    log = folder / f"relay-{uuid.uuid4().hex[:8]}.log"
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, str(ROOT / "manage.py"), "relay", "--batch", "20"], env=env,
                                   cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    process.log = log
    return process


def running(process):
    """True once the relay's loop runs (before that, its SIGTERM handler is not installed yet)."""
    return "outbox relay starting" in process.log.read_text()


def check_order(sequences, counters, exactly_once):
    """Per aggregate: the first sightings are 0..k-1 in order; with exactly_once, nothing else."""
    for aggregate, seen in sequences.items():
        first = list(dict.fromkeys(seen))
        assert first == list(range(counters[aggregate])), f"{aggregate}: {seen}"
        if exactly_once:
            assert seen == first, f"{aggregate} duplicated: {seen}"


def test_relays_killed_mid_stream_deliver_every_committed_event_in_order(process_env, tmp_path):
    topics.create_topic(TOPIC, partitions=4)
    exchange_name = f"sluice-acc-{uuid.uuid4().hex[:8]}"
    broker = kombu.Connection(destinations.broker_url(destinations.AMQP))
    exchange = kombu.Exchange(exchange_name, type="topic", durable=True)
    queue = kombu.Queue(exchange_name, exchange, routing_key="#", durable=False)
    queue(broker.channel()).declare()
    env = {**process_env, "DJANGO_SETTINGS_MODULE": "config.settings", "SLUICE_POLL_FALLBACK_MS": "200",
           "SLUICE_OUTBOX_BACKOFF_BASE_MS": "100", "SLUICE_LOG_LEVEL": "WARNING"}
    log = open(tmp_path / "generator.log", "w")
    code = ("import django; django.setup(); from tests.acceptance.test_outbox_crash import generate; "
            f"generate({TRANSACTIONS}, {exchange_name!r}, 7)")
    generator = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                                 stderr=log, text=True)
    relays = [relay(env, tmp_path) for _ in range(3)]
    rng, kills = random.Random(11), 0
    try:
        while generator.poll() is None:
            time.sleep(rng.uniform(0.3, 0.6))
            # Kill one that is at work (mid-batch, as likely as not), and start a replacement.
            working = [p for p in relays if running(p)]
            if not working:
                continue
            victim = working[rng.randrange(len(working))]
            relays.remove(victim)
            victim.send_signal(signal.SIGKILL)
            victim.wait(10)
            kills += 1
            relays.append(relay(env, tmp_path))
        output, _ = generator.communicate(timeout=60)
        assert generator.returncode == 0, (tmp_path / "generator.log").read_text()[-3000:]
        summary = json.loads(output)
        deadline = time.monotonic() + 45
        while models.OutboxEvent.objects.filter(delivered_at__isnull=True).exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not models.OutboxEvent.objects.filter(delivered_at__isnull=True).exists(), "the outbox did not drain"
        deadline = time.monotonic() + 30
        while not all(running(p) for p in relays) and time.monotonic() < deadline:
            time.sleep(0.1)  # a SIGTERM before the loop runs would kill, not stop, the process
        time.sleep(0.2)
    finally:
        for process in relays:
            process.send_signal(signal.SIGTERM)
        stopped = [process.wait(20) for process in relays]
        if generator.poll() is None:
            generator.kill()
        log.close()
    assert kills >= 5 and stopped == [0] * len(relays), "relays stop gracefully on SIGTERM"

    events = {str(e.id): e for e in models.OutboxEvent.objects.all()}
    assert len(events) == summary["committed"] and summary["rolled_back"] > 0
    assert not any(e.payload["rollback"] for e in events.values())

    # The Sluice topic: every committed event once, in order per aggregate (one partition each).
    info = topics.get_topic(TOPIC)
    rows = queueing_models.Record.objects.filter(topic_id=info.id).order_by("partition", "offset")
    in_topic = [json.loads(bytes(r.value)) for r in rows]
    assert not any(e["data"]["rollback"] for e in in_topic)
    assert sorted(e["id"] for e in in_topic) == sorted(i for i, e in events.items() if e.destination.startswith("sluice:"))
    sequences = {}
    for envelope in in_topic:
        sequences.setdefault(envelope["subject"], []).append(envelope["data"]["n"])
    check_order(sequences, summary["counters"], exactly_once=True)

    # RabbitMQ: every committed event at least once; redeliveries after a kill come after the first
    # sighting, so the first sightings are in order.
    received = []
    try:
        with broker.SimpleQueue(queue) as simple:
            while True:
                try:
                    message = simple.get(timeout=1.0)
                except simple.Empty:
                    break
                received.append(message.decode())
                message.ack()
    finally:
        queue(broker.channel()).delete()
        exchange(broker.channel()).delete()
        broker.release()
    assert not any(e["data"]["rollback"] for e in received)
    assert {e["id"] for e in received} == {i for i, e in events.items() if e.destination.startswith("amqp:")}
    sequences = {}
    for envelope in received:
        sequences.setdefault(envelope["subject"], []).append(envelope["data"]["n"])
    check_order(sequences, summary["counters"], exactly_once=False)
    duplicates = len(received) - len({e["id"] for e in received})
    print(f"{kills} relays killed; {len(in_topic)} events in the topic; {len(received)} RabbitMQ messages, "
          f"{duplicates} of them redeliveries")
