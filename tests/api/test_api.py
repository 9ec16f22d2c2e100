import base64

import pytest
from django.contrib.auth.models import Permission, User
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from outbox import models as outbox_models
from queueing import models, topics


@pytest.fixture
def client(db):
    return APIClient()


def user_with(*codenames):
    user = User.objects.create_user(f"svc{User.objects.count()}", password="x")
    for codename in codenames:
        app, name = codename.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app, codename=name))
    return Token.objects.create(user=user).key


def authed(client, *codenames):
    client.credentials(HTTP_AUTHORIZATION=f"Token {user_with(*codenames)}")
    return client


def test_anonymous_calls_get_401_and_calls_without_permission_403(client):
    topics.create_topic("orders")
    assert client.get("/api/topics/").status_code == 401
    assert client.post("/api/half-messages/", {}, format="json").status_code == 401
    authed(client)
    assert client.get("/api/topics/").status_code == 403
    assert client.post("/api/topics/orders/records/", {"records": [{"value": 1}]}, format="json").status_code == 403
    assert not models.Record.objects.exists()


def test_topics_and_records(client):
    topics.create_topic("orders", partitions=2)
    authed(client, "queueing.view_topic", "queueing.add_record")
    assert "orders" in [t["name"] for t in client.get("/api/topics/").json()]
    sent = client.post("/api/topics/orders/records/", {"records": [
        {"value": {"id": 1}, "key": "a", "headers": {"h": "1"}},
        {"value": base64.b64encode(b"\x00raw").decode(), "value_encoding": "base64"},
    ], "partition": 1}, format="json")
    assert sent.status_code == 201, sent.content
    assert [(r["partition"], r["offset"]) for r in sent.json()] == [(1, 0), (1, 1)]
    detail = client.get("/api/topics/orders/").json()
    assert detail["partitions"][1]["log_end_offset"] == 2
    assert client.get("/api/topics/missing/").status_code == 404


@pytest.mark.parametrize("body,field", [
    ({"records": []}, "records"),
    ({"records": [{"value": "%%%", "value_encoding": "base64"}]}, "records"),
    ({"records": [{"value": 1}], "partition": -1}, "partition"),
    ({"records": [{"value": 1, "headers": ["h"]}]}, "records"),
    ({}, "records"),
])
def test_bad_records_get_400_and_store_nothing(client, body, field):
    topics.create_topic("orders")
    authed(client, "queueing.add_record")
    response = client.post("/api/topics/orders/records/", body, format="json")
    assert response.status_code == 400, response.content
    if field:
        assert field in response.json()
    assert not models.Record.objects.exists()


def test_engine_errors_map_to_http(client):
    topics.create_topic("tiny", max_message_bytes=5)
    authed(client, "queueing.add_record")
    batch = {"records": [{"value": 1}, {"value": "x" * 10}]}
    assert client.post("/api/topics/tiny/records/", batch, format="json").status_code == 413
    assert not models.Record.objects.exists()  # the batch is all or nothing
    assert client.post("/api/topics/nope/records/", {"records": [{"value": 1}]}, format="json").status_code == 404
    assert client.post("/api/topics/tiny/records/", {"records": [{"value": 1}], "partition": 4},
                       format="json").status_code == 404


def test_half_messages_over_rest(client):
    topics.create_topic("payments")
    authed(client, "outbox.add_halfmessage", "outbox.view_halfmessage", "outbox.change_halfmessage")
    created = client.post("/api/half-messages/", {
        "topic": "payments", "value": {"paid": 10}, "producer_group": "billing-svc",
        "callback_url": "http://127.0.0.1:9/check",
    }, format="json")
    assert created.status_code == 201, created.content
    message_id = created.json()["id"]
    assert created.json()["state"] == "prepared" and not models.Record.objects.exists()
    committed = client.post(f"/api/half-messages/{message_id}/commit/")
    assert committed.status_code == 200 and committed.json()["state"] == "committed"
    assert committed.json()["offset"] == 0 and models.Record.objects.count() == 1
    assert client.post(f"/api/half-messages/{message_id}/rollback/").status_code == 409
    assert client.get(f"/api/half-messages/{message_id}/").json()["state"] == "committed"
    assert client.get("/api/half-messages/nope/").status_code == 404
    bad = client.post("/api/half-messages/", {"topic": "payments", "value": 1, "producer_group": "x",
                                              "callback_url": "not a url"}, format="json")
    assert bad.status_code == 400 and "callback_url" in bad.json()
    assert outbox_models.HalfMessage.objects.count() == 1


def test_the_openapi_schema_renders(client):
    response = client.get("/api/schema/")
    assert response.status_code in (200, 401)
    authed(client)
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    assert b"/api/half-messages/" in schema.content


def test_a_redrive_over_rest_goes_to_the_failing_group_and_refuses_what_it_cannot_send(client, monkeypatch):
    from api import serializers as api_serializers
    from queueing import producer, types

    topics.create_topic("billing", partitions=2)
    topics.create_topic("billing.DLQ")
    for n in range(3):
        producer.send("billing.DLQ", {"n": n}, key=f"k{n}", headers={
            types.DLQ_ORIGINAL_TOPIC: "billing", types.DLQ_ORIGINAL_PARTITION: "0", types.DLQ_GROUP: "invoicer"})
    producer.send("billing.DLQ", {"n": 3}, headers={types.DLQ_ORIGINAL_TOPIC: "billing"})  # no group
    billing = topics.get_topic("billing").id
    assert client.post("/api/topics/billing.DLQ/redrive/", {}, format="json").status_code == 401
    authed(client, "queueing.add_record")

    dry = client.post("/api/topics/billing.DLQ/redrive/", {"dry_run": True}, format="json")
    assert dry.status_code == 200, dry.content
    assert dry.json()["selected"] == 4 and dry.json()["replayed"] is None
    assert dry.json()["invalid"] == [{"partition": 0, "offset": 3, "problem": (
        "no sluice.dlq.group header: no group to redrive it to (all groups: all_groups)")}]

    refused = client.post("/api/topics/billing.DLQ/redrive/", {}, format="json")
    assert refused.status_code == 400 and "cannot be replayed" in refused.json()["detail"]
    assert not models.Record.objects.filter(topic_id=billing).exists()

    monkeypatch.setattr(api_serializers, "MAX_REDRIVE", 2)
    too_many = client.post("/api/topics/billing.DLQ/redrive/", {"skip_invalid": True}, format="json")
    assert too_many.status_code == 400 and "more than 2 dead letters" in too_many.json()["detail"]
    monkeypatch.undo()

    done = client.post("/api/topics/billing.DLQ/redrive/", {"skip_invalid": True, "offsets": ["0:0", "0:3"]},
                       format="json")
    assert done.status_code == 201, done.content
    assert (done.json()["replayed"], done.json()["skipped"]) == (1, 1)
    (copy,) = models.Record.objects.filter(topic_id=billing)
    assert copy.headers[types.REDRIVE_GROUP] == "invoicer"
    assert client.post("/api/topics/billing.DLQ/redrive/", {"offsets": ["x"]}, format="json").status_code == 400
