"""The console's API keys page: listed without secrets, created (the key shown once), revoked; audited."""
import re

import pytest
from django.test import Client

from api import keys
from api import models as api_models
from console import models





def test_a_key_is_created_shown_once_used_and_revoked(staff_client):
    response = staff_client.post("/console/api-keys/create", {
        "name": "billing", "scopes": "produce:orders.*, task:shop.*", "expires_at": "2099-01-01T00:00:00Z"})
    assert response.status_code == 200 and "no-store" in response["Cache-Control"]
    text = re.search(r'<code id="api-key-text">(sluice_[a-z0-9]{10}_[A-Za-z0-9_-]{32})</code>',
                     response.content.decode())[1]
    key = keys.authenticate(text)
    assert (key.name, key.scopes, key.user.username) == ("billing", ["produce:orders.*", "task:shop.*"], "ops")
    listing = staff_client.get("/console/api-keys/").content.decode()
    assert key.prefix in listing and "billing" in listing and "2099-01-01" in listing
    # The secret is what follows the second underscore; it may hold underscores of its own (one
    # early in it made a split at every underscore yield "2", found in the page's dates).
    assert text not in listing and text.split("_", 2)[2] not in listing
    response = staff_client.post(f"/console/api-keys/{key.prefix}/revoke", follow=True)
    assert f"revoked API key {key.prefix}" in response.content.decode()
    with pytest.raises(keys.Unusable, match="was revoked"):
        keys.authenticate(text)
    assert [(e.action, e.target) for e in models.AuditEntry.objects.order_by("id")] == [
        ("create API key", key.prefix), ("revoke API key", key.prefix)]
    assert "secret" not in str(models.AuditEntry.objects.first().after) and text not in str(
        list(models.AuditEntry.objects.values()))


@pytest.mark.parametrize("form, message", [
    ({"name": "x", "scopes": "publish:orders"}, "the kind is one of"),
    ({"name": "x", "scopes": ""}, "give at least one scope"),
    ({"name": "", "scopes": "operate"}, "a key&#x27;s name is 1 to 200 characters"),
    ({"name": "x", "scopes": "operate", "expires_at": "2099-01-01T00:00"}, "has no time zone"),
    ({"name": "x", "scopes": "operate", "expires_at": "2001-01-01T00:00:00Z"}, "must be in the future"),
])
def test_bad_input_is_refused_and_creates_nothing(staff_client, form, message):
    response = staff_client.post("/console/api-keys/create", form)
    assert response.status_code == 400 and message in response.content.decode()
    assert not api_models.ApiKey.objects.exists() and not models.AuditEntry.objects.exists()


def test_revoking_an_unknown_key_says_so(staff_client):
    response = staff_client.post("/console/api-keys/nosuchkey0/revoke", follow=True)
    assert "There is no API key &#x27;nosuchkey0&#x27;" in response.content.decode()
    assert not models.AuditEntry.objects.exists()


def test_an_anonymous_visitor_is_sent_to_the_login_page(db):
    for url in ("/console/api-keys/", "/console/api-keys/create"):
        response = Client().post(url) if url.endswith("create") else Client().get(url)
        assert response.status_code == 302 and response["Location"].startswith("/console/login/?next=")


def test_a_viewer_sees_keys_but_cannot_create_or_revoke(viewer, staff):
    key, _ = keys.create("billing", user=staff, scopes=["operate"])
    page = viewer.get("/console/api-keys/")
    assert page.status_code == 200 and key.prefix in page.content.decode()
    assert "Create a key" not in page.content.decode() and "/revoke" not in page.content.decode()
    assert viewer.post("/console/api-keys/create", {"name": "x", "scopes": "operate"}).status_code == 403
    assert viewer.post(f"/console/api-keys/{key.prefix}/revoke").status_code == 403
    assert api_models.ApiKey.objects.count() == 1 and keys.state(api_models.ApiKey.objects.get()) == "active"


def test_posts_without_csrf_are_refused(staff):
    key, _ = keys.create("billing", user=staff, scopes=["operate"])
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff)
    assert client.post("/console/api-keys/create", {"name": "x", "scopes": "operate"}).status_code == 403
    assert client.post(f"/console/api-keys/{key.prefix}/revoke").status_code == 403
    assert api_models.ApiKey.objects.count() == 1 and keys.state(api_models.ApiKey.objects.get()) == "active"


def test_the_list_is_a_get_only_page(staff_client):
    assert staff_client.get("/console/api-keys/create").status_code == 405
