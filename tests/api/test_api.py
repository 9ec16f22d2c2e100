import base64

import pytest
from django.contrib.auth.models import Permission, User
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
    return user


def authed(client, *codenames):
    """A session user with these model permissions (API keys have tests of their own)."""
    client.force_login(user_with(*codenames))
    return client


def test_anonymous_calls_get_401_and_calls_without_permission_403(client):
    topics.create_topic("orders")
    assert client.get("/api/v1/topics/").status_code == 401
    assert client.post("/api/v1/half-messages/", {}, format="json").status_code == 401
    authed(client)
    assert client.get("/api/v1/topics/").status_code == 403
    assert client.post("/api/v1/topics/orders/records/", {"records": [{"value": 1}]}, format="json").status_code == 403
    assert not models.Record.objects.exists()


def test_topics_and_records(client):
    topics.create_topic("orders", partitions=2)
    authed(client, "queueing.view_topic", "queueing.add_record")
    assert "orders" in [t["name"] for t in client.get("/api/v1/topics/").json()]
    sent = client.post("/api/v1/topics/orders/records/", {"records": [
        {"value": {"id": 1}, "key": "a", "headers": {"h": "1"}},
        {"value": base64.b64encode(b"\x00raw").decode(), "value_encoding": "base64"},
    ], "partition": 1}, format="json")
    assert sent.status_code == 201, sent.content
    assert [(r["partition"], r["offset"]) for r in sent.json()] == [(1, 0), (1, 1)]
    detail = client.get("/api/v1/topics/orders/").json()
    assert detail["partitions"][1]["log_end_offset"] == 2
    assert client.get("/api/v1/topics/missing/").status_code == 404


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
    response = client.post("/api/v1/topics/orders/records/", body, format="json")
    assert response.status_code == 400, response.content
    assert response["Content-Type"] == "application/problem+json"
    assert any(e["pointer"].startswith(f"#/{field}") for e in response.json()["errors"])
    assert not models.Record.objects.exists()


def test_engine_errors_map_to_http(client):
    topics.create_topic("tiny", max_message_bytes=5)
    authed(client, "queueing.add_record")
    batch = {"records": [{"value": 1}, {"value": "x" * 10}]}
    assert client.post("/api/v1/topics/tiny/records/", batch, format="json").status_code == 413
    assert not models.Record.objects.exists()  # the batch is all or nothing
    assert client.post("/api/v1/topics/nope/records/", {"records": [{"value": 1}]}, format="json").status_code == 404
    assert client.post("/api/v1/topics/tiny/records/", {"records": [{"value": 1}], "partition": 4},
                       format="json").status_code == 404


def test_half_messages_over_rest(client, settings):
    settings.SLUICE_HALF_CALLBACK_ALLOW = ["127.0.0.1"]
    topics.create_topic("payments")
    authed(client, "outbox.add_halfmessage", "outbox.view_halfmessage", "outbox.change_halfmessage")
    created = client.post("/api/v1/half-messages/", {
        "topic": "payments", "value": {"paid": 10}, "producer_group": "billing-svc",
        "callback_url": "http://127.0.0.1:9/check",
    }, format="json")
    assert created.status_code == 201, created.content
    message_id = created.json()["id"]
    assert created.json()["state"] == "prepared" and not models.Record.objects.exists()
    committed = client.post(f"/api/v1/half-messages/{message_id}/commit/")
    assert committed.status_code == 200 and committed.json()["state"] == "committed"
    assert committed.json()["offset"] == 0 and models.Record.objects.count() == 1
    assert client.post(f"/api/v1/half-messages/{message_id}/rollback/").status_code == 409
    assert client.get(f"/api/v1/half-messages/{message_id}/").json()["state"] == "committed"
    assert client.get("/api/v1/half-messages/nope/").status_code == 404
    bad = client.post("/api/v1/half-messages/", {"topic": "payments", "value": 1, "producer_group": "x",
                                              "callback_url": "not a url"}, format="json")
    assert bad.status_code == 400 and bad.json()["errors"] == [{"pointer": "#/callback_url",
                                                                "detail": "Enter a valid URL."}]
    assert outbox_models.HalfMessage.objects.count() == 1


def test_the_openapi_schema_renders(client):
    response = client.get("/api/v1/schema/")
    assert response.status_code in (200, 401)
    authed(client)
    schema = client.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert "/api/v1/half-messages/" in paths and not any(p.startswith("/api/topics") for p in paths)
    records = paths["/api/v1/topics/{name}/records/"]["post"]["responses"]
    assert {"400", "401", "403", "404", "413", "415", "429"} <= set(records)
    assert records["413"]["content"]["application/problem+json"]["schema"] == {"$ref": "#/components/schemas/Problem"}


def test_a_callback_to_the_metadata_address_is_refused_and_nothing_stored(client, settings):
    """Regression (issue 13, item 8): a half message could be checked back at 169.254.169.254."""
    settings.SLUICE_HALF_CALLBACK_ALLOW = ["payments.example"]
    topics.create_topic("payments")
    authed(client, "outbox.add_halfmessage")
    refused = client.post("/api/v1/half-messages/", {
        "topic": "payments", "value": 1, "producer_group": "svc",
        "callback_url": "http://169.254.169.254/latest/meta-data/iam/security-credentials/"}, format="json")
    assert refused.status_code == 400 and refused["Content-Type"] == "application/problem+json"
    assert "'169.254.169.254' is not in SLUICE_HALF_CALLBACK_ALLOW" in refused.json()["detail"]
    both = client.post("/api/v1/half-messages/", {
        "topic": "payments", "value": 1, "producer_group": "svc", "checker": "x",
        "callback_url": "https://payments.example/c"}, format="json")
    assert both.status_code == 400 and "one of them" in both.json()["detail"]
    assert not outbox_models.HalfMessage.objects.exists()
