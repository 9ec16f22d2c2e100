"""outbox.publish: events written in the caller's transaction, their envelope, their destinations."""
import datetime
import threading

import pytest
from django.db import connection, transaction

from outbox import destinations, exceptions, models, outbox
from outbox import relay
from queueing import storage as queueing_storage
from queueing import wakeups


def ask_relays(listener):
    """Ask publishers to notify, as a relay about to sleep does; return the stripes refused."""
    return queueing_storage.ask_for_wakeups(listener, space=wakeups.PUBLISHES, keys=relay.STRIPES)


def publish(aggregate="17", n=1, destination="sluice:events", **extra):
    return outbox.publish(aggregate_type="order", aggregate_id=aggregate, event_type="order.paid",
                          payload={"n": n}, destination=destination, **extra)


def test_an_event_commits_with_the_callers_transaction(db):
    with transaction.atomic():
        event = publish(headers={"trace": "t-1"}, key="customer-9")
        assert connection.in_atomic_block
    stored = models.OutboxEvent.objects.get()
    assert (stored.seq, stored.id) == (event.seq, event.id)
    assert (stored.aggregate_type, stored.aggregate_id, stored.event_type) == ("order", "17", "order.paid")
    assert stored.payload == {"n": 1} and stored.headers == {"trace": "t-1"} and stored.key == "customer-9"
    assert stored.delivered_at is None and stored.attempts == 0
    event.last_error = "saved again"
    event.save(update_fields=["last_error"])  # the returned instance is the stored row, not a new one
    assert models.OutboxEvent.objects.get().last_error == "saved again"


def test_a_rolled_back_transaction_publishes_nothing(db):
    with pytest.raises(RuntimeError), transaction.atomic():
        publish()
        raise RuntimeError("the payment failed")
    assert not models.OutboxEvent.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_outside_a_transaction_an_event_commits_at_once():
    assert not connection.in_atomic_block
    publish()
    seen = []

    def look():
        try:
            seen.append(models.OutboxEvent.objects.count())
        finally:
            connection.close()

    other = threading.Thread(target=look)  # another connection sees it: it is committed
    other.start()
    other.join(10)
    assert seen == [1]


@pytest.mark.django_db(transaction=True)
def test_publish_wakes_waiting_relays_at_commit_and_not_before():
    listener = wakeups.listen_connection([outbox.CHANNEL])
    try:
        publish()
        assert list(listener.notifies(timeout=0.3, stop_after=1)) == []  # no relay waits: silent
        assert ask_relays(listener) == set()
        with transaction.atomic():
            publish()
            assert list(listener.notifies(timeout=0.3, stop_after=1)) == []
        assert [n.channel for n in listener.notifies(timeout=5, stop_after=1)] == [outbox.CHANNEL]
        with pytest.raises(RuntimeError), transaction.atomic():
            publish()
            raise RuntimeError
        assert list(listener.notifies(timeout=0.3, stop_after=1)) == []
        outbox.publish_many([{"aggregate_type": "order", "aggregate_id": "9", "event_type": "order.paid",
                              "payload": {}, "destination": "sluice:orders"}])
        assert [n.channel for n in listener.notifies(timeout=5, stop_after=1)] == [outbox.CHANNEL]
        queueing_storage.stop_waiting(listener)
        publish()
        assert list(listener.notifies(timeout=0.3, stop_after=1)) == []
    finally:
        listener.close()


@pytest.mark.django_db(transaction=True)
def test_a_relay_ask_waits_out_a_publish_that_missed_it():
    listener = wakeups.listen_connection([outbox.CHANNEL])
    try:
        with transaction.atomic():
            publish()
            assert len(ask_relays(listener)) == 1  # that publish holds its stripe
        assert ask_relays(listener) == set()
    finally:
        listener.close()


def test_publish_many_writes_events_in_the_order_given(db):
    with transaction.atomic():
        created = outbox.publish_many(
            {"aggregate_type": "order", "aggregate_id": str(i % 2), "event_type": "order.paid", "payload": {"n": i},
             "destination": "sluice:events"} for i in range(6)
        )
    assert [e.payload["n"] for e in models.OutboxEvent.objects.order_by("seq")] == list(range(6))
    assert len(created) == 6 and outbox.publish_many([]) == []


def test_the_envelope_is_a_cloudevent(db, settings):
    event = publish()
    envelope = outbox.cloudevent(event.id, "order", "17", "order.paid", {"n": 1}, event.created_at)
    assert envelope == {
        "specversion": "1.0", "id": str(event.id), "source": "/sluice/order", "type": "order.paid",
        "subject": "17", "time": envelope["time"], "datacontenttype": "application/json", "data": {"n": 1},
    }
    assert envelope["time"].endswith("Z")
    assert datetime.datetime.fromisoformat(envelope["time"]) == event.created_at
    settings.SLUICE_OUTBOX_SOURCE = "https://shop.example.com/"
    assert outbox.cloudevent(event.id, "order", "17", "t", {}, event.created_at)["source"] == \
        "https://shop.example.com/order"


@pytest.mark.parametrize("change", [
    {"destination": "kafka:events"}, {"destination": "sluice:bad name"}, {"destination": "nowhere"},
    {"destination": "amqp:"}, {"destination": "redis:"}, {"destination": "amqp://h/?exchange=x&exchange_type=odd"},
    {"destination": "x" * 600}, {"payload": object()}, {"payload": float("nan")}, {"aggregate_id": ""},
    {"aggregate_type": "t" * 256}, {"event_type": None}, {"headers": {"a": 1}}, {"headers": ["a"]}, {"key": 5},
])
def test_bad_events_are_refused_and_nothing_is_written(db, change):
    arguments = {"aggregate_type": "order", "aggregate_id": "1", "event_type": "t", "payload": {},
                 "destination": "sluice:events", **change}
    with pytest.raises(exceptions.OutboxError) as raised:
        outbox.publish(**arguments)
    assert str(raised.value)
    with pytest.raises(exceptions.OutboxError):
        outbox.publish_many([arguments])
    assert not models.OutboxEvent.objects.exists()


def test_destinations_are_parsed_from_their_strings(monkeypatch):
    monkeypatch.setenv("AMQP_URL", "amqp://u:secret@rabbit:5672/shop")
    monkeypatch.setenv("REDIS_URL", "redis://cache:6379/2")
    resolve = destinations.resolve
    assert resolve("sluice:shop.order-paid") == destinations.Destination(kind="sluice", topic="shop.order-paid")
    short = resolve("amqp:orders")
    assert (short.url, short.exchange, short.routing_key, short.exchange_type) == \
        ("amqp://u:secret@rabbit:5672/shop", "orders", None, "topic")  # routed by event type
    assert resolve("amqp:orders/order.paid").routing_key == "order.paid"
    inline = resolve("amqp://u:p@h:5673/vh?exchange=billing&routing_key=invoices&exchange_type=direct&heartbeat=5")
    assert (inline.url, inline.exchange, inline.routing_key, inline.exchange_type) == \
        ("amqp://u:p@h:5673/vh?heartbeat=5", "billing", "invoices", "direct")
    assert (resolve("redis:jobs").url, resolve("redis:jobs").queue) == ("redis://cache:6379/2", "jobs")
    assert resolve("redis://r:6380/1?queue=mail").url == "redis://r:6380/1"
    assert "secret" not in short.label and "rabbit:5672" in short.label


def test_named_destinations_come_from_settings(db, settings):
    settings.SLUICE_OUTBOX_DESTINATIONS = {"billing": "amqp://u:p@h//?exchange=billing", "log": "sluice:audit",
                                           "loop": "billing"}
    assert destinations.resolve("billing").exchange == "billing"
    assert destinations.resolve("log").topic == "audit"
    event = publish(destination="billing")
    assert models.OutboxEvent.objects.get(seq=event.seq).destination == "billing"  # resolved at delivery
    for bad in ("loop", "missing"):
        with pytest.raises(exceptions.InvalidDestination):
            destinations.resolve(bad)


def test_the_notify_rides_in_the_insert(db, django_assert_num_queries):
    with django_assert_num_queries(1):
        publish()

