"""The relay's external path, against the real RabbitMQ and Redis of this machine (AMQP_URL, REDIS_URL).

Every test declares its own exchange and queue under a unique name and deletes them after.
"""
import datetime
import json
import uuid

import kombu
import pytest
from django.utils import timezone

from outbox import brokers, destinations, models, outbox, relay
from queueing import topics

AMQP = destinations.broker_url(destinations.AMQP)
REDIS = destinations.broker_url(destinations.REDIS)


@pytest.fixture
def name():
    return f"sluice-test-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def rabbit(name):
    """A topic exchange and a queue bound to it for `order.#`, deleted after the test."""
    with kombu.Connection(AMQP) as conn:
        exchange = kombu.Exchange(name, type="topic", durable=True)
        queue = kombu.Queue(name, exchange, routing_key="order.#", durable=False)
        queue(conn.channel()).declare()
        try:
            yield conn, queue
        finally:
            queue(conn.channel()).delete()
            exchange(conn.channel()).delete()


def publish(destination, aggregate, n, event_type="order.paid"):
    return outbox.publish(aggregate_type="order", aggregate_id=aggregate, event_type=event_type,
                          payload={"n": n}, destination=destination)


def drain(loop):
    while loop.run_once():
        pass
    loop.publisher.close()


def receive(conn, queue, count):
    """Take count messages from queue (acknowledged), as (envelope, message)."""
    taken = []
    with conn.SimpleQueue(queue) as simple:
        for _ in range(count):
            message = simple.get(timeout=5)
            taken.append((message.decode(), message))
            message.ack()
        with pytest.raises(simple.Empty):
            simple.get(timeout=0.2)
    return taken


@pytest.mark.rabbitmq
def test_events_reach_rabbitmq_with_confirms_in_order_per_aggregate(db, name, rabbit):
    conn, queue = rabbit
    events = [publish(f"amqp:{name}", f"a{n % 3}", n) for n in range(30)]
    loop = relay.Relay(batch=8)
    drain(loop)
    assert loop.delivered == 30 and not models.OutboxEvent.objects.filter(delivered_at__isnull=True).exists()
    received = receive(conn, queue, 30)
    for envelope, message in received:
        assert message.content_type == brokers.CONTENT_TYPE
        assert message.properties["message_id"] == envelope["id"] == message.headers["ce_id"]
        assert message.delivery_info["routing_key"] == "order.paid"  # no routing key given: the event type
        assert envelope["specversion"] == "1.0" and envelope["source"] == "/sluice/order"
    for aggregate in ("a0", "a1", "a2"):
        numbers = [e["data"]["n"] for e, _ in received if e["subject"] == aggregate]
        assert numbers == sorted(numbers) and len(numbers) == 10
    assert {e["id"] for e, _ in received} == {str(e.id) for e in events}


@pytest.mark.rabbitmq
def test_the_publisher_waits_for_rabbitmqs_confirm(db, name):
    """A broker nack (here: a full queue that rejects publishes) leaves the event undelivered."""
    with kombu.Connection(AMQP) as conn:
        exchange = kombu.Exchange(name, type="topic", durable=True)
        queue = kombu.Queue(name, exchange, routing_key="#", durable=False,
                            queue_arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
        queue(conn.channel()).declare()
        try:
            publish(f"amqp:{name}/k", "a", 1)
            publish(f"amqp:{name}/k", "b", 1)
            loop = relay.Relay()
            drain(loop)
            delivered = models.OutboxEvent.objects.filter(delivered_at__isnull=False)
            assert [e.aggregate_id for e in delivered] == ["a"]
            refused = models.OutboxEvent.objects.get(aggregate_id="b")
            assert refused.attempts == 1 and "Nack" in refused.last_error and refused.next_attempt_at
        finally:
            queue(conn.channel()).delete()
            exchange(conn.channel()).delete()


@pytest.mark.rabbitmq
def test_a_refused_event_holds_back_the_rest_of_its_aggregate_and_no_other(db, name):
    """One event of an aggregate in flight at a time: after a nack, its later events are not sent,
    while another aggregate's events in the same windows go through."""
    with kombu.Connection(AMQP) as conn:
        exchange = kombu.Exchange(name, type="topic", durable=True)
        full = kombu.Queue(f"{name}-full", exchange, routing_key="full", durable=False,
                           queue_arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
        other = kombu.Queue(f"{name}-other", exchange, routing_key="other", durable=False)
        for queue in (full, other):
            queue(conn.channel()).declare()
        try:
            for n in range(3):
                publish(f"amqp:{name}/full", "a", n)
                publish(f"amqp:{name}/other", "b", n)
            drain(relay.Relay())
            rows = {(e.aggregate_id, e.payload["n"]): e for e in models.OutboxEvent.objects.all()}
            assert rows[("a", 0)].delivered_at is not None
            assert rows[("a", 1)].delivered_at is None and "Nack" in rows[("a", 1)].last_error
            assert rows[("a", 2)].delivered_at is None and rows[("a", 2)].attempts == 0  # never sent
            assert all(rows[("b", n)].delivered_at is not None for n in range(3))
            assert [e["data"]["n"] for e, _ in receive(conn, other, 3)] == [0, 1, 2]
        finally:
            for queue in (full, other):
                queue(conn.channel()).delete()
            exchange(conn.channel()).delete()


@pytest.mark.rabbitmq
def test_an_inline_amqp_url_names_the_exchange_and_routing_key(db, name):
    with kombu.Connection(AMQP) as conn:
        exchange = kombu.Exchange(name, type="direct", durable=True)
        queue = kombu.Queue(name, exchange, routing_key="invoices", durable=False)
        queue(conn.channel()).declare()
        try:
            publish(f"{AMQP}?exchange={name}&exchange_type=direct&routing_key=invoices", "a", 1)
            drain(relay.Relay())
            [(envelope, _)] = receive(conn, queue, 1)
            assert envelope["data"] == {"n": 1}
        finally:
            queue(conn.channel()).delete()
            exchange(conn.channel()).delete()


@pytest.mark.redis
@pytest.mark.parametrize("form", ["short", "inline", "named"])
def test_events_reach_redis(db, name, settings, form):
    destination = {"short": f"redis:{name}", "inline": f"{REDIS}?queue={name}", "named": "mail"}[form]
    settings.SLUICE_OUTBOX_DESTINATIONS = {"mail": f"redis:{name}"}
    for n in range(3):
        publish(destination, "1", n)
    drain(relay.Relay())
    with kombu.Connection(REDIS) as conn:
        with conn.SimpleQueue(name) as simple:
            try:
                received = []
                for _ in range(3):
                    message = simple.get(timeout=5)
                    received.append(message.decode())
                    message.ack()
                assert [e["data"]["n"] for e in received] == [0, 1, 2]
                assert received[0]["type"] == "order.paid" and received[0]["subject"] == "1"
            finally:
                simple.clear()
                simple.queue(conn.default_channel).delete()


@pytest.mark.parametrize("kind", ["amqp", "redis"])
def test_a_broker_that_is_down_holds_its_events_and_no_others(db, name, monkeypatch, kind):
    topics.create_topic("events")
    monkeypatch.setenv("AMQP_URL", "amqp://guest:guest@127.0.0.1:1//")  # nothing listens on port 1
    monkeypatch.setenv("REDIS_URL", "redis://:guest@127.0.0.1:1/0")
    for n in range(3):
        publish(f"{kind}:{name}", f"r{n}", n)
    publish("sluice:events", "s", 1)
    loop = relay.Relay(backoff_ms=(30_000, 60_000))
    loop.run_once()
    rows = {e.aggregate_id: e for e in models.OutboxEvent.objects.all()}
    assert rows["s"].delivered_at is not None  # another destination is not held up
    probe, *others = (rows[f"r{n}"] for n in range(3))
    assert probe.delivered_at is None and probe.attempts == 1 and "BrokerUnavailable" in probe.last_error
    for event in others:  # not tried while the broker is down: they wait with the probe
        assert event.delivered_at is None and event.attempts == 0 and event.next_attempt_at
        assert "127.0.0.1:1" in event.last_error and "guest" not in event.last_error
    assert loop.run_once() is False and (loop.failed, loop.deferred) == (1, 2)


@pytest.mark.rabbitmq
def test_events_held_by_a_broker_outage_go_once_it_is_back(db, name, rabbit, monkeypatch):
    conn, queue = rabbit
    monkeypatch.setenv("AMQP_URL", "amqp://guest:guest@127.0.0.1:1//")
    for n in range(4):
        publish(f"amqp:{name}", "a", n)
    loop = relay.Relay()
    loop.run_once()
    assert not models.OutboxEvent.objects.filter(delivered_at__isnull=False).exists()
    monkeypatch.setenv("AMQP_URL", AMQP)
    models.OutboxEvent.objects.update(next_attempt_at=timezone.now() - datetime.timedelta(seconds=1))
    drain(loop)
    assert [e["data"]["n"] for e, _ in receive(conn, queue, 4)] == [0, 1, 2, 3]


def test_the_cloudevents_serializer_round_trips():
    body = {"specversion": "1.0", "id": "x", "data": {"n": 1}}
    content_type, encoding, data = kombu.serialization.dumps(body, serializer=brokers.SERIALIZER)
    assert (content_type, encoding) == (brokers.CONTENT_TYPE, "utf-8")
    assert kombu.serialization.loads(data, content_type, encoding) == body
    assert json.loads(data) == body
