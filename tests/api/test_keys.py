"""API keys: stored hashed, shown once, scoped, expiring and revocable; DRF's tokens retired."""
import datetime
import io

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from api import keys
from api import models as api_models
from queueing import models, topics


@pytest.fixture
def user(db):
    topics.create_topic("orders.eu")
    topics.create_topic("orders.us")
    topics.create_topic("payments")
    return User.objects.create_user("billing")


def client_with(text):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {text}")
    return client


def produce(client, topic="orders.eu"):
    return client.post(f"/api/v1/topics/{topic}/records/", {"records": [{"value": 1}]}, format="json")


def test_the_command_shows_a_key_once_and_stores_only_its_digest(user):
    out, err = io.StringIO(), io.StringIO()
    call_command("apikeys", "create", "billing-service", "--user", "billing", "--scope", "produce:orders.*",
                 "--expires-in", "P90D", stdout=out, stderr=err)
    text = out.getvalue().strip()
    key = api_models.ApiKey.objects.get()
    assert text.startswith(f"sluice_{key.prefix}_") and f"Created API key {key.prefix}" in err.getvalue()
    with connection.cursor() as cursor:
        cursor.execute("SELECT row_to_json(k)::text FROM api_apikey k")
        assert text.removeprefix(f"sluice_{key.prefix}_") not in cursor.fetchone()[0]  # the secret
    assert produce(client_with(text)).status_code == 201
    listing = io.StringIO()
    call_command("apikeys", "list", stdout=listing)
    line = listing.getvalue().splitlines()[1]
    assert key.prefix in line and "active" in line and "produce:orders.*" in line and text not in listing.getvalue()
    call_command("apikeys", "revoke", key.prefix, stdout=io.StringIO())
    refused = produce(client_with(text))
    assert refused.status_code == 401 and f"API key {key.prefix} was revoked" in refused.json()["detail"]
    assert models.Record.objects.count() == 1


@pytest.mark.parametrize("arguments,message", [
    (["--scope", "publish:orders"], "the kind is one of produce, consume, task or operate"),
    (["--scope", "produce:"], "give a name or a pattern"),
    (["--scope", "operate", "--expires-in", "90 days"], "is not a duration"),
])
def test_the_command_refuses_bad_scopes_and_stores_nothing(user, arguments, message):
    with pytest.raises(CommandError, match=message):
        call_command("apikeys", "create", "x", "--user", "billing", *arguments, stdout=io.StringIO())
    assert not api_models.ApiKey.objects.exists()
    with pytest.raises(CommandError, match="no user named 'nobody'"):
        call_command("apikeys", "create", "x", "--user", "nobody", "--scope", "operate")
    with pytest.raises(CommandError, match="no API key 'nope'"):
        call_command("apikeys", "revoke", "nope")


def test_missing_wrong_expired_revoked_and_retired_credentials_get_401(user):
    key, text = keys.create("svc", user=user, scopes=["produce:orders.eu"])
    expired, expired_text = keys.create("old", user=user, scopes=["produce:orders.eu"],
                                        expires_at=timezone.now() - datetime.timedelta(seconds=1))
    wrong_secret = text[:-4] + ("AAAA" if not text.endswith("AAAA") else "BBBB")
    cases = {
        None: "Authentication credentials were not provided.",
        "Bearer sluice_nope": "malformed API key",
        f"Bearer sluice_{'x' * 10}_{'y' * 32}": "unknown API key",
        f"Bearer {wrong_secret}": "unknown API key",
        f"Bearer {expired_text}": f"API key {expired.prefix} expired at",
        f"Token {'a' * 40}": "DRF tokens were retired",
        f"Bearer {text} extra": "give one API key after Bearer",
    }
    for header, detail in cases.items():
        client = APIClient()
        if header:
            client.credentials(HTTP_AUTHORIZATION=header)
        response = produce(client)
        assert response.status_code == 401, (header, response.content)
        assert response["Content-Type"] == "application/problem+json"
        assert response["WWW-Authenticate"] == 'Bearer realm="sluice"'
        assert detail in response.json()["detail"], header
    assert not models.Record.objects.exists()


def test_scopes_decide_per_topic_with_patterns(user):
    _, text = keys.create("svc", user=user, scopes=["produce:orders.*", "consume:payments"])
    client = client_with(text)
    assert produce(client, "orders.eu").status_code == 201
    assert produce(client, "orders.us").status_code == 201
    denied = produce(client, "payments")
    assert denied.status_code == 403 and "has no scope produce:payments" in denied.json()["detail"]
    assert sorted(t["name"] for t in client.get("/api/v1/topics/").json()) == ["orders.eu", "orders.us", "payments"]
    _, narrow = keys.create("narrow", user=user, scopes=["produce:orders.eu"])
    assert [t["name"] for t in client_with(narrow).get("/api/v1/topics/").json()] == ["orders.eu"]
    assert client_with(narrow).get("/api/v1/topics/payments/").status_code == 403
    _, tasks_only = keys.create("tasks", user=user, scopes=["task:shop.*"])
    assert produce(client_with(tasks_only)).status_code == 403
    assert models.Record.objects.count() == 2


def test_a_half_message_needs_produce_on_its_topic(user, settings):
    settings.SLUICE_HALF_CALLBACK_ALLOW = ["payments.example"]
    _, text = keys.create("svc", user=user, scopes=["produce:orders.*"])
    body = {"topic": "payments", "value": 1, "producer_group": "svc", "callback_url": "https://payments.example/c"}
    response = client_with(text).post("/api/v1/half-messages/", body, format="json")
    assert response.status_code == 403
    created = client_with(text).post("/api/v1/half-messages/", dict(body, topic="orders.eu"), format="json")
    assert created.status_code == 201, created.content
    assert created.json()["state"] == "prepared"


def test_last_use_is_recorded(user):
    key, text = keys.create("svc", user=user, scopes=["produce:orders.eu"])
    assert key.last_used_at is None
    produce(client_with(text))
    key.refresh_from_db()
    assert key.last_used_at is not None and key.last_used_at <= timezone.now()


def test_throttling_counts_per_key(user, settings):
    settings.SLUICE_API = dict(settings.SLUICE_API, THROTTLE_RATE="1/day")  # one window: see test_throttling
    _, first = keys.create("a", user=user, scopes=["produce:orders.eu"])
    _, second = keys.create("b", user=user, scopes=["produce:orders.eu"])
    assert produce(client_with(first)).status_code == 201
    throttled = produce(client_with(first))
    assert throttled.status_code == 429 and "Retry-After" in throttled
    assert produce(client_with(second)).status_code == 201
    assert models.Record.objects.count() == 2


def test_the_admin_creates_a_key_shows_it_once_and_revokes(user, client):
    admin = User.objects.create_superuser("root", password="pw")
    client.force_login(admin)
    response = client.post("/admin/api/apikey/add/", {
        "name": "from-admin", "user": user.pk, "scopes": '["operate"]', "expires_at_0": "", "expires_at_1": "",
    }, follow=True)
    assert response.status_code == 200
    key = api_models.ApiKey.objects.get(name="from-admin")
    shown = [str(m) for m in response.context["messages"] if "shown only this once" in str(m)]
    text = shown[0].rsplit(" ", 1)[1]
    assert text.startswith(f"sluice_{key.prefix}_") and keys.authenticate(text) == key
    assert client.get("/admin/api/apikey/").content.count(text.encode()) == 0
    client.post("/admin/api/apikey/", {"action": "revoke", "_selected_action": [key.pk]})
    key.refresh_from_db()
    assert keys.state(key) == "revoked"
    assert LogEntry.objects.filter(object_id=str(key.pk), change_message__contains="revoked_at").exists()
    bad = client.post("/admin/api/apikey/add/", {"name": "x", "user": user.pk, "scopes": '["admin"]'})
    assert bad.status_code == 200 and "the kind is one of" in bad.content.decode()
    assert not api_models.ApiKey.objects.filter(name="x").exists()


def test_drf_tokens_are_retired(db):
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass('authtoken_token')")
        assert cursor.fetchone()[0] is None
