"""Every error of the API is an RFC 9457 problem; input is strict; nothing is stored by a failure."""
import pytest
from django.contrib.auth.models import Permission, User
from rest_framework.test import APIClient

from queueing import models, topics

PROBLEM = "application/problem+json"


@pytest.fixture
def client(db):
    topics.create_topic("orders", partitions=2)
    user = User.objects.create_user("svc", password="x")
    for codename in ("view_topic", "add_record"):
        user.user_permissions.add(Permission.objects.get(content_type__app_label="queueing", codename=codename))
    client = APIClient()
    client.force_authenticate(user)
    return client


def problem_of(response, status):
    assert response.status_code == status, response.content
    assert response["Content-Type"] == PROBLEM
    body = response.json()
    assert body["status"] == status and body["type"].startswith("urn:sluice:problem:")
    assert body["title"] and body["detail"]
    return body


@pytest.mark.parametrize("path", ["/api/v1/nothing/", "/api/v1/topics", "/api/nothing/", "/api/v1/"])
def test_unknown_routes_under_api_are_404_problems(client, path):
    assert problem_of(client.get(path), 404)["type"] == "urn:sluice:problem:no-such-route"


def test_a_wrong_method_is_a_405_problem(client):
    body = problem_of(client.delete("/api/v1/topics/"), 405)
    assert "DELETE" in body["detail"]


def test_a_form_body_is_a_415_problem_and_malformed_json_a_400(client):
    problem_of(client.post("/api/v1/topics/orders/records/", {"records": "x"}), 415)
    body = problem_of(client.post("/api/v1/topics/orders/records/", b'{"records": [', content_type="application/json"), 400)
    assert "not valid JSON" in body["detail"]
    problem_of(client.post("/api/v1/topics/orders/records/", b'{"records": [{"value": NaN}]}',
                           content_type="application/json"), 400)
    assert not models.Record.objects.exists()


def test_an_oversized_body_is_a_413_problem(client, settings):
    settings.SLUICE_API = dict(settings.SLUICE_API, MAX_BODY_BYTES=100)
    big = {"records": [{"value": "x" * 200}]}
    body = problem_of(client.post("/api/v1/topics/orders/records/", big, format="json"), 413)
    assert "limit is 100" in body["detail"]
    assert not models.Record.objects.exists()


def test_throttling_is_a_429_problem_with_retry_after(client, settings):
    settings.SLUICE_API = dict(settings.SLUICE_API, THROTTLE_RATE="2/day")  # one window: see test_throttling
    assert client.get("/api/v1/topics/").status_code == 200
    assert client.get("/api/v1/topics/").status_code == 200
    refused = client.get("/api/v1/topics/")
    problem_of(refused, 429)
    assert 1 <= int(refused["Retry-After"]) <= 86400


@pytest.mark.parametrize("body,pointer,detail", [
    ({"records": [{"value": 1}], "partiton": 1}, "#/partiton", "unknown field"),
    ({"records": [{"value": 1, "kye": "a"}]}, "#/records/0/kye", "unknown field"),
    ({"records": [{"value": 1, "key": 123}]}, "#/records/0/key", "a string is expected"),
    ({"records": [{"value": 1}], "partition": "1"}, "#/partition", "an integer is expected"),
    ({"records": [{"value": 1}], "partition": True}, "#/partition", "an integer is expected"),
    ({"records": [{"value": 1, "headers": {"h": 1}}]}, "#/records/0/headers/h", "a string is expected"),
    ({"records": [{"value": 1, "value_encoding": 1}]}, "#/records/0/value_encoding", '"1" is not a valid choice.'),
    ({"records": {"value": 1}}, "#/records", 'Expected a list of items but got type "dict".'),
])
def test_unknown_fields_and_wrong_types_are_refused_and_store_nothing(client, body, pointer, detail):
    response = client.post("/api/v1/topics/orders/records/", body, format="json")
    problem = problem_of(response, 400)
    assert {"pointer": pointer, "detail": detail} in problem["errors"]
    assert problem["type"] == "urn:sluice:problem:invalid-input"
    assert not models.Record.objects.exists()


def test_an_empty_body_names_the_missing_field(client):
    response = client.post("/api/v1/topics/orders/records/", b"", content_type="application/json")
    assert problem_of(response, 400)["errors"] == [{"pointer": "#/records", "detail": "This field is required."}]


def test_engine_errors_are_problems_too(client):
    missing = problem_of(client.post("/api/v1/topics/nope/records/", {"records": [{"value": 1}]}, format="json"), 404)
    assert missing["type"] == "urn:sluice:problem:topic-not-found" and "'nope'" in missing["detail"]
    problem_of(client.get("/api/v1/topics/nope/"), 404)


def test_anonymous_calls_get_a_401_problem(db):
    response = APIClient().get("/api/v1/topics/")
    problem_of(response, 401)


def test_the_unversioned_paths_still_answer_with_a_deprecation_note(client):
    response = client.get("/api/topics/")
    assert response.status_code == 200 and "orders" in [t["name"] for t in response.json()]
    assert response["Deprecation"].startswith("@")
    assert response["Link"] == '</api/v1/topics/>; rel="successor-version"'
    assert "Deprecation" not in client.get("/api/v1/topics/")


def test_the_login_form_is_throttled_per_address(db, settings, client):
    settings.SLUICE_API = dict(settings.SLUICE_API, LOGIN_THROTTLE_RATE="3/day")  # one window
    User.objects.create_user("admin", password="right", is_staff=True)
    tries = [client.post("/admin/login/", {"username": "admin", "password": "wrong"}) for _ in range(3)]
    assert [t.status_code for t in tries] == [200, 200, 200]  # the form again, with its error
    refused = client.post("/admin/login/", {"username": "admin", "password": "right"})
    assert refused.status_code == 429 and 1 <= int(refused["Retry-After"]) <= 86400
    assert "Too many login attempts" in refused.content.decode()
    assert "_auth_user_id" not in client.session
    assert client.get("/admin/login/").status_code == 200  # the form still shows


def test_every_problem_of_a_body_is_reported_at_once(client):
    body = {"records": [{"value": 1, "key": 123}], "partiton": 1}
    response = client.post("/api/v1/topics/orders/records/", body, format="json")
    assert problem_of(response, 400)["errors"] == [
        {"pointer": "#/records/0/key", "detail": "a string is expected"},
        {"pointer": "#/partiton", "detail": "unknown field"}]
    assert not models.Record.objects.exists()
