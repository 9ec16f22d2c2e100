import threading

import pytest
from django.db import connection, transaction

from outbox import exceptions, inbox, models, outbox, relay
from queueing import models as queueing_models
from queueing import partitioner, topics, types


def records(topic):
    info = topics.get_topic(topic)
    return list(queueing_models.Record.objects.filter(topic_id=info.id).order_by("partition", "offset"))


def publish(aggregate, n, topic="events"):
    return outbox.publish(aggregate_type="order", aggregate_id=aggregate, event_type="order.changed",
                          payload={"n": n}, destination=f"sluice:{topic}")


def test_a_committed_event_is_delivered_once_as_a_cloudevent(db):
    topics.create_topic("events", partitions=3)
    with transaction.atomic():
        event = publish("17", 1)
    loop = relay.Relay()
    loop.run_once()
    loop.run_once()
    [record] = records("events")
    assert record.partition == partitioner.partition_for_key(b"17", 3)
    body = types.Record(topic="events", partition=0, offset=0, key=None, value=bytes(record.value),
                        value_format=record.value_format, headers={}, timestamp=None).data
    assert body["specversion"] == "1.0" and body["id"] == str(event.id) and body["type"] == "order.changed"
    assert body["subject"] == "17" and body["data"] == {"n": 1}
    assert record.headers["ce_id"] == str(event.id)
    assert models.OutboxEvent.objects.get().delivered_at is not None


def test_a_rolled_back_transaction_publishes_nothing(db):
    topics.create_topic("events")
    with pytest.raises(RuntimeError):
        with transaction.atomic():
            publish("1", 1)
            raise RuntimeError
    relay.Relay().run_once()
    assert records("events") == [] and not models.OutboxEvent.objects.exists()


@pytest.mark.parametrize("kwargs", [
    {"destination": "kafka:events"}, {"destination": "sluice:bad name"}, {"payload": object()},
    {"aggregate_id": ""}, {"headers": {"a": 1}},
])
def test_bad_events_are_refused(db, kwargs):
    arguments = {"aggregate_type": "order", "aggregate_id": "1", "event_type": "t", "payload": {},
                 "destination": "sluice:events", **kwargs}
    with pytest.raises(exceptions.OutboxError):
        outbox.publish(**arguments)
    assert not models.OutboxEvent.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_several_relays_keep_the_order_of_each_aggregate():
    topics.create_topic("events", partitions=2)
    for n in range(40):
        for aggregate in ("a", "b", "c", "d", "e"):
            publish(aggregate, n)
    relays = [relay.Relay(batch=7) for _ in range(3)]

    def run(loop):
        try:
            while models.OutboxEvent.objects.filter(delivered_at__isnull=True).exists():
                loop.run_once()
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(loop,)) for loop in relays]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    seen = {}
    for record in records("events"):
        body = types.Record(topic="", partition=0, offset=0, key=None, value=bytes(record.value), value_format=1,
                            headers={}, timestamp=None).data
        seen.setdefault(body["subject"], []).append(body["data"]["n"])
    assert seen == {aggregate: list(range(40)) for aggregate in "abcde"}
    assert sum(loop.delivered for loop in relays) == 200


def test_a_failing_event_backs_off_and_holds_only_its_aggregate(db):
    topics.create_topic("events")
    publish("x", 1, topic="missing")
    publish("x", 2)
    publish("y", 1)
    loop = relay.Relay()
    loop.run_once()
    failed = models.OutboxEvent.objects.get(aggregate_id="x", payload={"n": 1})
    assert failed.attempts == 1 and "missing" in failed.last_error and failed.next_attempt_at is not None
    delivered = [e.aggregate_id for e in models.OutboxEvent.objects.filter(delivered_at__isnull=False)]
    assert delivered == ["y"]  # x's second event waits behind its first


def test_delivered_events_are_pruned(db):
    topics.create_topic("events")
    publish("1", 1)
    relay.Relay().run_once()
    models.OutboxEvent.objects.update(delivered_at=models.OutboxEvent.objects.get().created_at.replace(year=2000))
    assert relay.storage.prune_delivered(older_than_s=3600, limit=100) == 1


def test_the_inbox_runs_a_handler_once_per_message(db):
    effects = []
    handler = inbox.idempotent("mailer")(lambda record: effects.append(record.offset))
    record = types.Record(topic="t", partition=0, offset=5, key=None, value=b"", value_format=0,
                          headers={"ce_id": "m1"}, timestamp=None)
    handler(record)
    handler(record._replace(offset=6))  # the same message delivered again, elsewhere
    assert effects == [5]
    inbox.idempotent("other")(lambda r: effects.append("other"))(record)
    assert effects == [5, "other"]


def test_a_failed_handler_records_nothing(db):
    def boom(record):
        raise ValueError("nope")

    record = types.Record(topic="t", partition=0, offset=1, key=None, value=b"", value_format=0, headers={},
                          timestamp=None)
    with pytest.raises(ValueError):
        inbox.idempotent("c")(boom)(record)
    assert not models.InboxEntry.objects.exists()
    assert inbox.message_id(record) == "t-0@1"


@pytest.mark.django_db(transaction=True)
def test_concurrent_deliveries_of_one_message_have_one_effect():
    from django.contrib.auth.models import Group

    started = threading.Barrier(4)

    def handle(record):
        Group.objects.create(name=f"effect-{threading.get_ident()}")

    handler = inbox.idempotent("race")(handle)
    record = types.Record(topic="t", partition=0, offset=1, key=None, value=b"", value_format=0,
                          headers={"ce_id": "same"}, timestamp=None)

    def run():
        try:
            started.wait()
            handler(record)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert Group.objects.filter(name__startswith="effect-").count() == 1
