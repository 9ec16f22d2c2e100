"""Idempotency-Key: a retried POST replays the first response and stores once."""
import datetime

import pytest
from django.contrib.auth.models import User
from django.db import connections
from rest_framework.test import APIClient

from api import keys
from api import models as api_models
from outbox import models as outbox_models
from queueing import models, topics

BATCH = {"records": [{"value": {"n": 1}, "key": "a"}, {"value": {"n": 2}, "key": "b"}]}


@pytest.fixture
def key(db):
    topics.create_topic("orders", partitions=3)
    user = User.objects.create_user("svc")
    return keys.create("svc", user=user, scopes=["produce:orders"])


def client_for(text):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {text}")
    return client


def send(client, body=BATCH, idempotency_key="order-7", path="/api/v1/topics/orders/records/"):
    return client.post(path, body, format="json", HTTP_IDEMPOTENCY_KEY=idempotency_key)


def test_a_retried_post_replays_the_first_response_and_stores_once(key):
    client = client_for(key[1])
    first = send(client)
    assert first.status_code == 201 and "Idempotent-Replayed" not in first
    again = send(client)
    assert again.status_code == 201 and again["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert models.Record.objects.count() == 2
    # the same key, quoted as a structured-field string, is the same key
    assert send(client, idempotency_key='"order-7"').json() == first.json()
    assert models.Record.objects.count() == 2


def test_the_same_key_with_another_body_is_refused(key):
    client = client_for(key[1])
    send(client)
    other = send(client, body={"records": [{"value": {"n": 3}}]})
    assert other.status_code == 422 and other["Content-Type"] == "application/problem+json"
    assert other.json()["type"] == "urn:sluice:problem:idempotency-key-reused"
    assert send(client, path="/api/v1/topics/orders/records/?x=1").status_code == 422
    assert models.Record.objects.count() == 2


def test_keys_are_per_credential(key):
    other, other_text = keys.create("other", user=key[0].user, scopes=["produce:orders"])
    send(client_for(key[1]))
    second = send(client_for(other_text))
    assert second.status_code == 201 and "Idempotent-Replayed" not in second
    assert models.Record.objects.count() == 4


def test_a_failed_request_stores_nothing_and_can_be_retried_with_the_key(key):
    client = client_for(key[1])
    bad = send(client, body={"records": [{"value": 1, "key": 5}]})
    assert bad.status_code == 400
    missing = send(client, path="/api/v1/topics/nope/records/")
    assert missing.status_code == 403  # the key has no scope on it; nothing stored either way
    assert not api_models.IdempotentResponse.objects.exists() and not models.Record.objects.exists()
    assert send(client).status_code == 201 and models.Record.objects.count() == 2


def test_a_request_in_progress_under_the_key_gets_409(key):
    other = connections.create_connection("default")
    try:
        with other.cursor() as cursor:
            cursor.execute("BEGIN")
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s), hashtext(%s))",
                           [f"sluice.idempotency:key:{key[0].pk}", "order-7"])
            busy = send(client_for(key[1]))
            cursor.execute("ROLLBACK")
    finally:
        other.close()
    assert busy.status_code == 409 and "still in progress" in busy.json()["detail"]
    assert not models.Record.objects.exists()


def test_keys_expire_after_the_ttl(key, settings):
    settings.SLUICE_API = dict(settings.SLUICE_API, IDEMPOTENCY_TTL_S=60)
    client = client_for(key[1])
    send(client)
    remembered = api_models.IdempotentResponse.objects.get()
    assert datetime.timedelta(seconds=59) < remembered.expires_at - remembered.created_at <= datetime.timedelta(seconds=61)
    api_models.IdempotentResponse.objects.update(expires_at=remembered.created_at)
    fresh = send(client)
    assert fresh.status_code == 201 and "Idempotent-Replayed" not in fresh
    assert models.Record.objects.count() == 4 and api_models.IdempotentResponse.objects.count() == 1


@pytest.mark.parametrize("value", ["", "a" * 256, "bad key", "é"])
def test_a_malformed_key_is_refused(key, value):
    response = send(client_for(key[1]), idempotency_key=value)
    assert response.status_code == 400
    assert response.json()["errors"][0]["pointer"] == "#/Idempotency-Key"
    assert not models.Record.objects.exists()


def test_half_messages_replay_too(key, settings):
    settings.SLUICE_HALF_CALLBACK_ALLOW = ["payments.example"]
    client = client_for(key[1])
    body = {"topic": "orders", "value": 1, "producer_group": "svc", "callback_url": "https://payments.example/c"}
    first = send(client, body=body, path="/api/v1/half-messages/")
    again = send(client, body=body, path="/api/v1/half-messages/")
    assert first.status_code == again.status_code == 201 and first.json()["id"] == again.json()["id"]
    assert outbox_models.HalfMessage.objects.count() == 1
