"""The relay's external path against the real RabbitMQ and Redis of this machine (AMQP_URL, REDIS_URL)."""
import json
import os
import uuid

import kombu
import pytest

from outbox import brokers, exceptions, inbox, models, outbox, relay


@pytest.fixture
def names():
    return f"sluice-test-{uuid.uuid4().hex[:10]}"


def publish(destination, aggregate, n):
    return outbox.publish(aggregate_type="order", aggregate_id=aggregate, event_type="order.paid",
                          payload={"n": n}, destination=destination)


def test_events_reach_rabbitmq_with_confirms_in_order_per_aggregate(db, names):
    url = os.environ.get("AMQP_URL", brokers.AMQP_URL)
    exchange = kombu.Exchange(names, type="topic", durable=True)
    queue = kombu.Queue(names, exchange, routing_key="order.#", durable=False, auto_delete=False)
    with kombu.Connection(url) as conn:
        queue(conn.channel()).declare()
        try:
            for n in range(20):
                publish(f"amqp:{names}/order.paid", f"a{n % 3}", n)
            loop = relay.Relay(batch=8)
            while loop.run_once():
                pass
            loop.publisher.close()
            assert not models.OutboxEvent.objects.filter(delivered_at__isnull=True).exists()
            received = []
            simple = conn.SimpleQueue(queue)
            for _ in range(20):
                message = simple.get(timeout=5)
                received.append(json.loads(message.body) if isinstance(message.body, (str, bytes)) else message.body)
                assert message.properties["message_id"] == received[-1]["id"]
                message.ack()
            simple.close()
        finally:
            queue(conn.channel()).delete()
            exchange(conn.channel()).delete()
    for aggregate in ("a0", "a1", "a2"):
        numbers = [e["data"]["n"] for e in received if e["subject"] == aggregate]
        assert numbers == sorted(numbers) and numbers
    assert len({e["id"] for e in received}) == 20


def test_events_reach_redis(db, names):
    publish(f"redis:{names}", "1", 1)
    loop = relay.Relay()
    loop.run_once()
    loop.publisher.close()
    url = os.environ.get("REDIS_URL", brokers.REDIS_URL)
    with kombu.Connection(url) as conn:
        simple = conn.SimpleQueue(names)
        try:
            message = simple.get(timeout=5)
            body = json.loads(message.body) if isinstance(message.body, (str, bytes)) else message.body
            assert body["data"] == {"n": 1} and body["type"] == "order.paid"
            message.ack()
        finally:
            simple.clear()
            simple.close()


def test_a_broker_that_is_down_leaves_the_event_undelivered_with_a_back_off(db, names, monkeypatch):
    monkeypatch.setenv("AMQP_URL", "amqp://guest:guest@127.0.0.1:1//")  # nothing listens on port 1
    publish(f"amqp:{names}/x", "1", 1)
    loop = relay.Relay()
    loop.run_once()
    event = models.OutboxEvent.objects.get()
    assert event.delivered_at is None and event.attempts == 1 and event.last_error
    assert event.next_attempt_at is not None


def test_bad_external_destinations_are_refused(db):
    for destination in ("amqp:", "redis:", "kafka:x"):
        with pytest.raises(exceptions.InvalidDestination):
            publish(destination, "1", 1)


def test_the_kombu_inbox_callback_runs_a_message_once(db, names):
    url = os.environ.get("AMQP_URL", brokers.AMQP_URL)
    effects = []
    callback = inbox.kombu_callback("rabbit-consumer", lambda body: effects.append(body["n"]))
    with kombu.Connection(url) as conn:
        simple = conn.SimpleQueue(names)
        try:
            for _ in range(2):  # the same message delivered twice
                simple.put({"n": 7}, message_id="same-id")
            for _ in range(2):
                message = simple.get(timeout=5)
                callback(message.payload, message)
        finally:
            simple.clear()
            simple.close()
            simple.queue(conn.channel()).delete()
    assert effects == [7]
    assert models.InboxEntry.objects.filter(consumer="rabbit-consumer").count() == 1
