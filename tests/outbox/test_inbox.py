"""The inbox: idempotent consumers of Sluice records and of broker messages, under redelivery and races."""
import datetime
import io
import threading
import time
import uuid

import kombu
import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.utils import timezone

from outbox import destinations, inbox, models, outbox, relay
from queueing import models as queueing_models
from queueing import registry, topics, types, worker


@pytest.fixture
def effects(django_db_blocker):
    """A table the handlers write their effect to (no unique constraint: only the inbox keeps it single)."""
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS inbox_test_effect (consumer text, message text)")
        cursor.execute("TRUNCATE inbox_test_effect")

    def write(consumer, message):
        with connection.cursor() as cursor:
            cursor.execute("INSERT INTO inbox_test_effect VALUES (%s, %s)", [consumer, str(message)])

    def rows():
        with connection.cursor() as cursor:
            cursor.execute("SELECT consumer, message FROM inbox_test_effect ORDER BY 1, 2")
            return cursor.fetchall()

    write.rows = rows
    yield write
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS inbox_test_effect")


def record(offset=1, headers=None, topic="t", partition=0):
    return types.Record(topic=topic, partition=partition, offset=offset, key=None, value=b"", value_format=0,
                        headers=headers or {}, timestamp=None)


def test_a_redelivered_message_is_skipped(db, effects):
    handler = inbox.idempotent("mailer")(lambda r: effects("mailer", r.offset) or "sent")
    assert handler(record(5, {"ce_id": "m1"})) == "sent"
    assert handler(record(6, {"ce_id": "m1"})) is None  # the same message again, from another offset
    assert inbox.idempotent("audit")(lambda r: effects("audit", r.offset))(record(7, {"ce_id": "m1"})) is None
    assert effects.rows() == [("audit", "7"), ("mailer", "5")]  # consumers are deduplicated apart
    assert models.InboxEntry.objects.filter(message_id="m1").count() == 2


def test_message_ids_come_from_headers_then_the_records_place(db):
    assert inbox.default_message_id(record(3, {"ce_id": "a", "id": "b"})) == "a"
    assert inbox.default_message_id(record(3, {"id": "b"})) == "b"
    assert inbox.default_message_id(record(3, topic="orders", partition=2)) == "orders-2@3"
    seen = []
    handler = inbox.idempotent("c", message_id=lambda r: r.headers["order"])(seen.append)
    handler(record(1, {"order": "o-1"}))
    handler(record(2, {"order": "o-1"}))
    assert [r.offset for r in seen] == [1]
    long_id = "x" * 1000
    inbox.idempotent("c", message_id=lambda r: long_id)(seen.append)(record(3))
    assert models.InboxEntry.objects.get(message_id__startswith="sha256:").message_id.startswith("sha256:")


def test_a_failed_handler_records_nothing_and_runs_again(db, effects):
    calls = []

    def flaky(r):
        calls.append(r.offset)
        effects("c", r.offset)
        if len(calls) == 1:
            raise ValueError("downstream unavailable")

    handler = inbox.idempotent("c")(flaky)
    with pytest.raises(ValueError):
        handler(record(1))
    assert not models.InboxEntry.objects.exists() and effects.rows() == []  # the effect rolled back too
    handler(record(1))
    handler(record(1))
    assert calls == [1, 1] and effects.rows() == [("c", "1")]


def test_consumer_names_are_checked():
    for bad in ("", "x" * 256, None):
        with pytest.raises(ValueError):
            inbox.idempotent(bad)


def race(handler, message, threads=4):
    """Run handler(message) in several threads at once, each on its own connection."""
    start, errors = threading.Barrier(threads), []

    def run():
        try:
            start.wait()
            handler(message)
        except Exception as error:  # noqa: BLE001 - collected for the assertion
            errors.append(error)
        finally:
            connection.close()

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(20)
    return errors


@pytest.mark.django_db(transaction=True)
def test_concurrent_deliveries_of_one_message_have_one_effect(effects):
    calls = []

    def slow(r):
        calls.append(threading.get_ident())
        effects("race", r.headers["ce_id"])
        time.sleep(0.3)  # the others arrive while this transaction is open

    assert race(inbox.idempotent("race")(slow), record(1, {"ce_id": "same"})) == []
    assert len(calls) == 1 and effects.rows() == [("race", "same")]


@pytest.mark.django_db(transaction=True)
def test_when_the_first_delivery_rolls_back_a_concurrent_one_takes_effect(effects):
    calls = []

    def first_fails(r):
        calls.append(r)
        time.sleep(0.3)
        if len(calls) == 1:
            raise ValueError("first try fails")
        effects("c", "done")

    errors = race(inbox.idempotent("c")(first_fails), record(1, {"ce_id": "m"}), threads=2)
    assert [type(e) for e in errors] == [ValueError] and len(calls) == 2
    assert effects.rows() == [("c", "done")]


def test_old_entries_expire_and_an_expired_message_would_run_again(db, effects):
    handler = inbox.idempotent("c")(lambda r: effects("c", r.headers["ce_id"]))
    handler(record(1, {"ce_id": "old"}))
    handler(record(2, {"ce_id": "new"}))
    models.InboxEntry.objects.filter(message_id="old").update(processed_at=timezone.now() - datetime.timedelta(days=8))
    out = io.StringIO()
    call_command("inbox", "prune", "--older-than", "7d", stdout=out)
    assert "Pruned 1 inbox entry" in out.getvalue()
    assert list(models.InboxEntry.objects.values_list("message_id", flat=True)) == ["new"]
    handler(record(1, {"ce_id": "old"}))  # why the retention must outlast any redelivery
    handler(record(2, {"ce_id": "new"}))
    assert effects.rows() == [("c", "new"), ("c", "old"), ("c", "old")]


def test_an_idempotent_handler_under_a_worker_survives_a_replay_of_its_topic(db, effects, settings):
    """Records relayed from the outbox, handled by a worker, then read again from the start (as after
    a crash before the offset commit): every effect happens once."""
    settings.SLUICE = {**settings.SLUICE, "POLL_FALLBACK_MS": 50, "HEARTBEAT_INTERVAL_MS": 60_000}
    topics.create_topic("inbox.orders", partitions=2)
    for n in range(6):
        outbox.publish(aggregate_type="order", aggregate_id=str(n % 3), event_type="order.paid",
                       payload={"n": n}, destination="sluice:inbox.orders")
    relay.Relay().run_once()
    registry.handler("inbox.orders", group="inbox-test")(
        inbox.idempotent("inbox-test")(lambda r: effects("inbox-test", r.data["data"]["n"]))
    )
    try:
        for attempt in range(2):
            queueing_models.CommittedOffset.objects.filter(group__name="inbox-test").delete()
            loop = worker.Worker("inbox-test", registry.subscriptions("inbox-test"), poll_timeout=0.1)
            try:
                for _ in range(20):
                    loop.run_once()
                    if loop.processed == 6:
                        break
            finally:
                loop.consumer.close(commit=False)
            assert loop.processed == 6, f"pass {attempt}"
    finally:
        registry.unregister("inbox-test")
    assert effects.rows() == [("inbox-test", str(n)) for n in range(6)]


@pytest.fixture
def rabbit_queue():
    name = f"sluice-test-{uuid.uuid4().hex[:10]}"
    url = destinations.broker_url(destinations.AMQP)
    with kombu.Connection(url) as conn:
        exchange = kombu.Exchange(name, type="topic", durable=True)
        queue = kombu.Queue(name, exchange, routing_key="#", durable=False)
        queue(conn.channel()).declare()
        try:
            yield name, conn, queue
        finally:
            queue(conn.channel()).delete()
            exchange(conn.channel()).delete()


@pytest.mark.rabbitmq
def test_broker_messages_redelivered_by_the_relay_take_effect_once(db, effects, rabbit_queue):
    name, conn, queue = rabbit_queue
    for n in range(5):
        outbox.publish(aggregate_type="order", aggregate_id="a", event_type="order.paid", payload={"n": n},
                       destination=f"amqp:{name}")
    loop = relay.Relay()
    while loop.run_once():
        pass
    models.OutboxEvent.objects.update(delivered_at=None)  # as if the relay died before its commit
    while loop.run_once():
        pass
    loop.publisher.close()
    failed = []

    def handle(envelope):
        if envelope["data"]["n"] == 2 and not failed:
            failed.append(envelope["id"])
            raise ValueError("flaky")  # rolled back and requeued, then handled on redelivery
        effects("rabbit", envelope["data"]["n"])

    received = inbox.consume_kombu("rabbit", handle, queue=name, limit=11, timeout=0.2)
    assert received == 11 and failed
    assert effects.rows() == [("rabbit", str(n)) for n in range(5)]
    with conn.SimpleQueue(queue) as simple:  # everything acknowledged
        with pytest.raises(simple.Empty):
            simple.get(timeout=0.3)


@pytest.mark.rabbitmq
def test_a_broker_message_without_an_id_is_rejected(db, rabbit_queue):
    name, conn, queue = rabbit_queue
    with conn.Producer() as producer:
        producer.publish({"no": "id"}, exchange=queue.exchange, routing_key="x", serializer="json")
    handled = []
    stop = threading.Event()
    assert inbox.consume_kombu("c", handled.append, queue=name, limit=1, timeout=0.2, stop_event=stop) == 1
    assert handled == [] and not models.InboxEntry.objects.exists()
    with conn.SimpleQueue(queue) as simple:
        with pytest.raises(simple.Empty):
            simple.get(timeout=0.3)


def test_remember_joins_the_callers_transaction(db):
    with pytest.raises(RuntimeError), transaction.atomic():
        assert inbox.remember("c", "m") is True
        assert inbox.remember("c", "m") is False
        raise RuntimeError
    assert inbox.remember("c", "m") is True
