"""The relay to Sluice topics: exactly once, in order per aggregate, back-off, pruning, the loop."""
import datetime
import json
import threading
import time

import pytest
from django.db import connection, transaction
from django.utils import timezone

from outbox import models, outbox, relay
from queueing import models as queueing_models
from queueing import partitioner, topics


def publish(aggregate, n, topic="events", **extra):
    return outbox.publish(aggregate_type="order", aggregate_id=aggregate, event_type="order.changed",
                          payload={"n": n}, destination=extra.pop("destination", f"sluice:{topic}"), **extra)


def records(topic):
    info = topics.get_topic(topic)
    return list(queueing_models.Record.objects.filter(topic_id=info.id).order_by("partition", "offset"))


def bodies(topic):
    return [json.loads(bytes(r.value)) for r in records(topic)]


def by_aggregate(topic):
    seen = {}
    for body in bodies(topic):
        seen.setdefault(body["subject"], []).append(body["data"]["n"])
    return seen


def drain(loop, limit=100):
    for _ in range(limit):
        if not loop.run_once():
            return
    raise AssertionError("the relay did not run dry")


def undelivered():
    return models.OutboxEvent.objects.filter(delivered_at__isnull=True)


def test_a_committed_event_reaches_its_topic_once_keyed_by_its_aggregate(db):
    topics.create_topic("events", partitions=3)
    with transaction.atomic():
        event = publish("17", 1, headers={"trace": "t-1"})
    loop = relay.Relay()
    assert loop.run_once() is True
    assert loop.run_once() is False  # delivered, marked: nothing left to deliver again
    [record] = records("events")
    assert record.partition == partitioner.partition_for_key(b"17", 3) and bytes(record.key) == b"17"
    body = json.loads(bytes(record.value))
    assert (body["specversion"], body["id"], body["type"], body["subject"], body["data"]) == \
        ("1.0", str(event.id), "order.changed", "17", {"n": 1})
    assert record.headers == {"trace": "t-1", "ce_id": str(event.id), "ce_type": "order.changed",
                              "ce_source": "/sluice/order", "ce_subject": "17"}
    stored = models.OutboxEvent.objects.get()
    assert stored.delivered_at is not None and stored.attempts == 1 and loop.delivered == 1


def test_an_event_key_chooses_the_partition(db):
    topics.create_topic("events", partitions=8)
    publish("17", 1, key="customer-4")
    relay.Relay().run_once()
    [record] = records("events")
    assert record.partition == partitioner.partition_for_key(b"customer-4", 8)


def test_one_batch_carries_a_run_of_one_aggregate_in_order(db):
    topics.create_topic("events", partitions=2)
    for n in range(50):
        publish("hot", n)
    publish("cold", 0)
    loop = relay.Relay(batch=200)
    loop.run_once()
    assert loop.delivered == 51 and not undelivered().exists()
    assert by_aggregate("events") == {"hot": list(range(50)), "cold": [0]}


@pytest.mark.django_db(transaction=True)
def test_several_relays_keep_the_order_of_each_aggregate():
    topics.create_topic("events", partitions=2)
    for n in range(40):
        for aggregate in ("a", "b", "c", "d", "e"):
            publish(aggregate, n)
    relays = [relay.Relay(batch=7) for _ in range(3)]

    def run(loop):
        try:
            deadline = time.monotonic() + 30
            while undelivered().exists() and time.monotonic() < deadline:
                loop.run_once()
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(loop,)) for loop in relays]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=40)
    assert by_aggregate("events") == {aggregate: list(range(40)) for aggregate in "abcde"}
    assert sum(loop.delivered for loop in relays) == 200 and len(records("events")) == 200
    assert all(loop.delivered for loop in relays), "every relay took a share"


def test_a_failing_event_backs_off_and_holds_only_its_aggregate(db):
    topics.create_topic("events")
    publish("x", 1, topic="missing")
    publish("x", 2)
    publish("y", 1)
    loop = relay.Relay(backoff_ms=(1000, 60_000))
    loop.run_once()
    failed = models.OutboxEvent.objects.get(aggregate_id="x", payload={"n": 1})
    assert failed.attempts == 1 and "missing" in failed.last_error and failed.delivered_at is None
    assert 0.7 < backing_off_s() < 1.3
    assert [e.aggregate_id for e in models.OutboxEvent.objects.filter(delivered_at__isnull=False)] == ["y"]
    assert loop.run_once() is False  # x's first event backs off, and its second waits behind it
    assert by_aggregate("events") == {"y": [1]}


def test_a_failed_event_is_delivered_after_its_back_off_and_its_aggregate_moves_on(db):
    topics.create_topic("events")
    publish("x", 1, topic="later")
    publish("x", 2, topic="later")
    loop = relay.Relay()
    loop.run_once()
    topics.create_topic("later")
    assert loop.run_once() is False  # still backing off
    undelivered().update(next_attempt_at=timezone.now() - datetime.timedelta(seconds=1))
    drain(loop)
    assert by_aggregate("later") == {"x": [1, 2]}
    first = models.OutboxEvent.objects.get(payload={"n": 1})
    assert (first.attempts, first.last_error, first.next_attempt_at) == (2, "", None)


def backing_off_s():
    """Seconds until the event's next attempt, by the database's clock (fixed in a test transaction)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT extract(epoch FROM next_attempt_at - now()) FROM outbox_outboxevent "
                       "WHERE next_attempt_at IS NOT NULL")
        return float(cursor.fetchone()[0])


def test_the_back_off_grows_with_each_attempt_up_to_its_maximum(db):
    publish("x", 1, topic="missing")
    loop = relay.Relay(backoff_ms=(100, 1000))
    waits = []
    for _ in range(6):
        undelivered().update(next_attempt_at=timezone.now() - datetime.timedelta(days=1))
        loop.run_once()
        waits.append(backing_off_s())
    assert models.OutboxEvent.objects.get().attempts == 6
    assert 0.07 < waits[0] < 0.13 and 0.15 < waits[1] < 0.25 and all(0.75 < w < 1.3 for w in waits[4:])


def test_an_event_too_large_for_its_topic_fails_alone(db):
    """Regression: a batch append that fails is retried event by event, so the events sharing the
    poison event's partition are not held back with it."""
    topics.create_topic("events", partitions=1, max_message_bytes=2000)
    publish("a", 1)
    outbox.publish(aggregate_type="order", aggregate_id="big", event_type="t", payload={"blob": "x" * 5000},
                   destination="sluice:events")
    publish("c", 1)
    loop = relay.Relay()
    assert loop.run_once() is True and by_aggregate("events") == {}  # the one-statement append failed
    loop.run_once()  # the careful batch
    assert sorted(by_aggregate("events")) == ["a", "c"]
    poison = models.OutboxEvent.objects.get(aggregate_id="big")
    assert poison.delivered_at is None and "MessageTooLarge" in poison.last_error


def test_a_batch_whose_append_fails_in_the_database_is_rolled_back_with_its_marks(db):
    """Regression: the append and the mark "delivered" are one statement without a savepoint; when
    it fails after writing (a partition row gone), the batch must leave nothing marked, and the
    careful batch after it deliver what it can."""
    topics.create_topic("events", partitions=2)
    info = topics.get_topic("events")
    key_of = {partitioner.partition_for_key(key.encode(), 2): key for key in ("k1", "k2", "k3", "k4", "k5")}
    queueing_models.Partition.objects.filter(topic_id=info.id, number=1).delete()
    publish(key_of[0], 1)
    publish(key_of[1], 1)
    loop = relay.Relay()
    assert loop.run_once() is True
    assert undelivered().count() == 2 and records("events") == []
    loop.run_once()
    assert by_aggregate("events") == {key_of[0]: [1]}
    [failed] = undelivered()
    assert failed.aggregate_id == key_of[1] and "PartitionNotFound" in failed.last_error


def test_an_aggregate_changing_destination_keeps_its_order(db):
    topics.create_topic("one")
    publish("x", 1, topic="one")
    publish("x", 2, topic="missing")
    publish("x", 3, topic="one")
    loop = relay.Relay()
    loop.run_once()  # a batch takes an aggregate's run up to a change of destination
    loop.run_once()  # x2 fails: x3 must not overtake it
    assert by_aggregate("one") == {"x": [1]}
    assert undelivered().count() == 2 and loop.failed == 1


def test_an_event_whose_named_destination_was_removed_backs_off(db, settings):
    settings.SLUICE_OUTBOX_DESTINATIONS = {"audit": "sluice:events"}
    topics.create_topic("events")
    publish("x", 1, destination="audit")
    settings.SLUICE_OUTBOX_DESTINATIONS = {}
    relay.Relay().run_once()
    event = models.OutboxEvent.objects.get()
    assert event.delivered_at is None and "InvalidDestination" in event.last_error and event.attempts == 1
    settings.SLUICE_OUTBOX_DESTINATIONS = {"audit": "sluice:events"}  # fixed: pending events follow
    undelivered().update(next_attempt_at=None)
    relay.Relay().run_once()
    assert by_aggregate("events") == {"x": [1]}


def test_delivered_events_and_inbox_entries_are_pruned_by_age(db):
    topics.create_topic("events")
    for n in range(3):
        publish("a", n)
    publish("b", 0, topic="missing")  # undelivered: never pruned, however old
    loop = relay.Relay(prune_after_s=7 * 86400, inbox_retention_s=86400)
    drain(loop)
    long_ago = timezone.now() - datetime.timedelta(days=8)
    models.OutboxEvent.objects.filter(payload__n__in=[0, 1]).update(created_at=long_ago)
    models.OutboxEvent.objects.filter(aggregate_id="a", payload__n__in=[0, 1]).update(delivered_at=long_ago)
    models.InboxEntry.objects.create(consumer="c", message_id="old")
    models.InboxEntry.objects.create(consumer="c", message_id="new")
    models.InboxEntry.objects.filter(message_id="old").update(processed_at=long_ago)
    assert loop.prune(force=True) == 3
    assert sorted(models.OutboxEvent.objects.values_list("aggregate_id", "payload__n")) == [("a", 2), ("b", 0)]
    assert list(models.InboxEntry.objects.values_list("message_id", flat=True)) == ["new"]
    assert relay.Relay(prune_after_s=None, inbox_retention_s=None).prune(force=True) == 0


@pytest.mark.django_db(transaction=True)
def test_the_relay_wakes_on_notify_and_stops_at_once():
    topics.create_topic("events")
    loop = relay.Relay(fallback=30.0)  # without the NOTIFY it would wait 30 s
    thread = threading.Thread(target=loop.run)
    thread.start()
    try:
        time.sleep(0.5)  # let it claim nothing and start waiting
        began = time.monotonic()
        with transaction.atomic():
            publish("a", 1)
        while not by_aggregate("events") and time.monotonic() - began < 10:
            time.sleep(0.02)
        assert by_aggregate("events") == {"a": [1]} and time.monotonic() - began < 2
    finally:
        stopping = time.monotonic()
        loop.stop()
        thread.join(10)
    assert not thread.is_alive() and time.monotonic() - stopping < 1.5


@pytest.mark.django_db(transaction=True)
def test_the_relay_reconnects_after_the_database_drops_it():
    topics.create_topic("events")
    loop = relay.Relay(fallback=0.2)
    thread = threading.Thread(target=loop.run)
    thread.start()
    try:
        publish("a", 1)
        deadline = time.monotonic() + 10
        while loop.delivered < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        with connection.cursor() as cursor:  # every other session of this database: the relay's two
            cursor.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                           "WHERE datname = current_database() AND pid <> pg_backend_pid()")
            assert cursor.fetchone()[0] >= 1
        publish("a", 2)
        while loop.delivered < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert by_aggregate("events") == {"a": [1, 2]}
    finally:
        loop.stop()
        thread.join(10)
    assert not thread.is_alive()


def test_the_claim_probes_only_undelivered_events_of_an_aggregate(db):
    """Plan guard: with a long delivered history, NOT EXISTS must use the partial index (without it
    a claim walked every delivered event of a hot aggregate: 1.5 s at 50,000)."""
    with connection.cursor() as cursor:
        cursor.execute("""
            INSERT INTO outbox_outboxevent (id, aggregate_type, aggregate_id, event_type, payload, headers,
                                            destination, key, created_at, delivered_at, attempts, last_error)
            SELECT gen_random_uuid(), 'order', CASE WHEN i <= 20000 THEN 'hot' ELSE 'a' || i END, 't', '{}',
                   '{}', 'sluice:x', '', now(), CASE WHEN i <= 19000 THEN now() END, 0, ''
              FROM generate_series(1, 21000) i""")
        cursor.execute("ANALYZE outbox_outboxevent")
        cursor.execute("EXPLAIN (FORMAT JSON) " + relay.storage.queries["claim_events"], {"limit": 200,
                                                                                          "window": 1600})
        plan = json.dumps(cursor.fetchone()[0])
    assert "outbox_pending_aggregate" in plan


def _nodes(plan):
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def _pending(cursor, aggregates):
    """Insert undelivered events: [(aggregate_id, count, backing_off)] in that seq order."""
    for aggregate, count, backing_off in aggregates:
        cursor.execute("""
            INSERT INTO outbox_outboxevent (id, aggregate_type, aggregate_id, event_type, payload, headers,
                                            destination, key, created_at, attempts, last_error, next_attempt_at)
            SELECT gen_random_uuid(), 'order', %s, 't', '{}', '{}', 'sluice:x', '', now(), 0, '',
                   CASE WHEN %s AND i = 1 THEN now() + interval '1 hour' END
              FROM generate_series(1, %s) i""", [aggregate, backing_off, count])
    cursor.execute("ANALYZE outbox_outboxevent")


def test_a_claim_behind_one_long_backlog_looks_at_a_window_not_the_whole_backlog(db):
    """One aggregate with 20,000 pending events: the head test runs once per event of the window,
    never once per pending event (as NOT EXISTS, the planner made it a hash anti-join: N² = 24 s)."""
    with connection.cursor() as cursor:
        _pending(cursor, [("hot", 20000, False)])
        cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + relay.storage.queries["claim_events"],
                       {"limit": 200, "window": 1600})
        nodes = list(_nodes(cursor.fetchone()[0][0]["Plan"]))
    probes = [n for n in nodes if n.get("Index Name", "").startswith("outbox_") and n["Actual Loops"] > 1]
    assert probes and all(n["Actual Loops"] <= 1600 for n in probes)
    assert not any("Anti Join" in n["Node Type"] for n in nodes)
    claimed = relay.storage.claim_events(limit=200)
    assert len(claimed) == 200 and {e.aggregate_id for e in claimed} == {"hot"}


def test_when_the_window_holds_no_head_to_take_the_claim_looks_further(db):
    """The oldest events belong to an aggregate backing off: a claim still finds the events behind."""
    with connection.cursor() as cursor:
        _pending(cursor, [("stuck", 3000, True), ("ready", 2, False)])
    claimed = relay.storage.claim_events(limit=10)
    assert [e.aggregate_id for e in claimed] == ["ready", "ready"]


@pytest.mark.django_db(transaction=True)
def test_the_relay_command_delivers_what_is_waiting_and_reports(manage):
    topics.create_topic("events")
    for n in range(3):
        publish("a", n)
    publish("b", 0, topic="missing")
    result = manage("relay", "--once", "--prune-after", "7d", env={"SLUICE_OUTBOX_BACKOFF_BASE_MS": "60000"})
    assert result.returncode == 0, result.stderr
    assert "Delivered 3 event(s); 1 failed and 0 deferred" in result.stdout
    assert "Undelivered: 1 (1 backing off)" in result.stdout
    assert "sluice:missing" in result.stdout and "TopicNotFound" in result.stdout
    assert by_aggregate("events") == {"a": [0, 1, 2]}
    status = manage("relay", "--status")
    assert status.returncode == 0 and "Undelivered: 1 (1 backing off)" in status.stdout
    bad = manage("relay", "--once", "--prune-after", "soon")
    assert bad.returncode == 2 and "'soon' is not an age" in bad.stderr


@pytest.mark.django_db(transaction=True)
def test_a_relay_behind_a_long_publishing_transaction_wakes_at_its_commit():
    """Guards issue 10 for the relay: the publish was made before the relay asked, so it stays
    silent; the relay waits for its stripe instead of sleeping out its fallback interval."""
    topics.create_topic("events")
    loop = relay.Relay(fallback=60.0)
    thread = threading.Thread(target=loop.run)
    thread.start()
    try:
        began = time.monotonic()
        with transaction.atomic():
            publish("a", 1)
            time.sleep(0.5)  # business work after the publish: the relay asks meanwhile
        while not by_aggregate("events") and time.monotonic() - began < 30:
            time.sleep(0.02)
        assert by_aggregate("events") == {"a": [1]}
        assert loop.late_wakeups == 0
    finally:
        loop.stop()
        thread.join(10)
    assert not thread.is_alive()
