"""Tasks and workflows over HTTP: submit, poll, list, cancel, retry; only tasks marked http=True."""
import datetime
import sys
import time

import pytest
from django.contrib.auth.models import User
from django.utils import timezone
from rest_framework.test import APIClient

from api import keys
from scheduler import models, worker
from tests.api import http_tasks

ADD = "tests.api.http_tasks.add"
TOTAL = "tests.api.http_tasks.total"
FAILS = "tests.api.http_tasks.fails"


def client_for(*scopes):
    user = User.objects.create_user(f"svc{User.objects.count()}")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {keys.create('svc', user=user, scopes=list(scopes))[1]}")
    return client


def run_until(condition, timeout=60):
    """Step a task worker of the test queue until condition() holds (bounded, never a timed assertion)."""
    loop = worker.TaskWorker("apitest", concurrency=1, poll_timeout=0.1)
    try:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, "condition not reached"
            loop.run_once()
    finally:
        loop.stop()
        loop.close()


def finished(client, location):
    return lambda: client.get(location).json()["state"] in ("succeeded", "failed", "cancelled")


@pytest.mark.django_db(transaction=True)
def test_a_task_is_submitted_polled_to_its_result_and_a_failure_shows_its_error():
    client = client_for("task:tests.api.http_tasks.*")
    submitted = client.post("/api/v1/tasks/", {"name": ADD, "args": [2], "kwargs": {"b": 3}}, format="json")
    assert submitted.status_code == 202, submitted.content
    location = submitted["Location"]
    assert location == f"/api/v1/tasks/{submitted.json()['id']}/" and submitted.json()["state"] == "queued"
    failing = client.post("/api/v1/tasks/", {"name": FAILS, "args": ["no stock"]}, format="json")
    run_until(lambda: finished(client, location)() and finished(client, failing["Location"])())
    done = client.get(location).json()
    assert (done["state"], done["result"], done["attempts"], done["error"]) == ("succeeded", 5, 1, None)
    assert [a["outcome"] for a in done["attempt_list"]] == ["succeeded"]
    failed = client.get(failing["Location"]).json()
    assert failed["state"] == "failed" and failed["error"] == {"type": "builtins.ValueError", "message": "no stock"}
    retried = client.post(f"{failing['Location']}retry/")
    assert retried.status_code == 200 and retried.json()["state"] == "queued"


@pytest.mark.django_db(transaction=True)
def test_a_chain_group_and_chord_run_from_one_request_each():
    client = client_for("task:tests.api.http_tasks.*")
    chain = client.post("/api/v1/workflows/", {"chain": [
        {"name": ADD, "args": [1, 2]}, {"name": ADD, "args": [10]}]}, format="json")
    chord = client.post("/api/v1/workflows/", {"chord": {
        "header": [{"name": ADD, "args": [i, i]} for i in range(3)], "body": {"name": TOTAL}}}, format="json")
    group = client.post("/api/v1/workflows/", {"group": [{"name": ADD, "args": [1]}, {"name": ADD, "args": [2]}]},
                        format="json")
    for response in (chain, chord, group):
        assert response.status_code == 202, response.content
    assert chain.json()["description"] == "chain(add, add)" and len(chain.json()["tasks"]) == 1
    locations = [r["Location"] for r in (chain, chord, group)]
    run_until(lambda: all(client.get(loc).json()["state"] != "running" for loc in locations))
    assert [client.get(loc).json()["result"] for loc in locations] == [13, 6, [1, 2]]


@pytest.fixture
def client(db):
    return client_for("task:tests.api.http_tasks.add", "task:tests.api.http_tasks.total")


@pytest.mark.parametrize("name", [
    "tests.api.http_tasks.internal",             # registered, but not marked http=True
    "tests.api.never_imported.anything",         # a module that must not be imported
    "os.system", "", "x" * 256,
])
def test_only_tasks_marked_for_http_may_be_submitted(client, name):
    response = client.post("/api/v1/tasks/", {"name": name}, format="json")
    assert response.status_code == 400 and response["Content-Type"] == "application/problem+json"
    assert response.json()["errors"][0]["pointer"] == "#/name"
    assert "tests.api.never_imported" not in sys.modules
    assert not models.TaskResult.objects.exists()


def test_a_key_submits_only_the_tasks_its_scopes_name(client):
    response = client.post("/api/v1/tasks/", {"name": FAILS, "args": ["x"]}, format="json")
    assert response.status_code == 403 and f"no scope task:{FAILS}" in response.json()["detail"]
    producer = client_for("produce:*")
    assert producer.post("/api/v1/tasks/", {"name": ADD, "args": [1]}, format="json").status_code == 403
    assert not models.TaskResult.objects.exists()
    mine = client.post("/api/v1/tasks/", {"name": ADD, "args": [1]}, format="json").json()
    other = client_for("task:tests.api.http_tasks.fails")
    assert other.get(f"/api/v1/tasks/{mine['id']}/").status_code == 403
    assert other.get("/api/v1/tasks/").json()["results"] == []


@pytest.mark.parametrize("body,pointer", [
    ({"name": ADD, "args": {"a": 1}}, "#/args"),
    ({"name": ADD, "kwargs": [1]}, "#/kwargs"),
    ({"name": ADD, "priority": 101}, "#/priority"),
    ({"name": ADD, "priority": "1"}, "#/priority"),
    ({"name": ADD, "countdown": -1}, "#/countdown"),
    ({"name": ADD, "countdown": 5, "eta": "2030-01-01T00:00:00Z"}, "#/eta"),
    ({"name": ADD, "eta": "2030-01-01T00:00:00"}, "#/eta"),
    ({"name": ADD, "queue": 7}, "#/queue"),
    ({"name": ADD, "unique_key": ""}, "#/unique_key"),
    ({"name": ADD, "args": [1], "kwarg": {}}, "#/kwarg"),
])
def test_bad_submissions_are_refused_and_store_nothing(client, body, pointer):
    response = client.post("/api/v1/tasks/", body, format="json")
    assert response.status_code == 400, response.content
    assert pointer in [e["pointer"] for e in response.json()["errors"]]
    assert not models.TaskResult.objects.exists()


def test_an_invalid_queue_name_is_refused_by_the_task_layer(client):
    response = client.post("/api/v1/tasks/", {"name": ADD, "queue": "no spaces"}, format="json")
    assert response.status_code == 400 and "invalid queue name" in response.json()["detail"]
    assert not models.TaskResult.objects.exists()


def test_options_cancel_retry_and_unique_keys(client):
    later = client.post("/api/v1/tasks/", {"name": ADD, "args": [1], "countdown": 3600, "priority": 5,
                                           "queue": "apitest-later", "unique_key": "once"}, format="json").json()
    assert (later["state"], later["priority"], later["queue"], later["unique_key"]) == (
        "scheduled", 5, "apitest-later", "once")
    taken = client.post("/api/v1/tasks/", {"name": ADD, "args": [2], "unique_key": "once"}, format="json")
    assert taken.status_code == 409 and taken.json()["type"] == "urn:sluice:problem:already-enqueued"
    cancelled = client.post(f"/api/v1/tasks/{later['id']}/cancel/")
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    assert client.post(f"/api/v1/tasks/{later['id']}/cancel/").status_code == 409
    assert client.post(f"/api/v1/tasks/{later['id']}/retry/").json()["state"] == "queued"
    when = (timezone.now() + datetime.timedelta(days=1)).astimezone(datetime.timezone(datetime.timedelta(hours=1)))
    at = client.post("/api/v1/tasks/", {"name": ADD, "args": [3], "eta": when.isoformat()}, format="json").json()
    assert at["state"] == "scheduled" and datetime.datetime.fromisoformat(at["eta"].replace("Z", "+00:00")) == when
    too_late = client.post("/api/v1/tasks/", {"name": ADD, "eta": "2099-01-01T00:00:00Z"}, format="json")
    assert too_late.status_code == 400 and "a year at most" in too_late.json()["detail"]
    assert models.TaskResult.objects.count() == 2


def test_unknown_tasks_and_workflows_are_404(client):
    for path in ("/api/v1/tasks/00000000-0000-0000-0000-000000000000/", "/api/v1/tasks/nope/",
                 "/api/v1/workflows/nope/"):
        response = client.get(path)
        assert response.status_code == 404 and response["Content-Type"] == "application/problem+json"
    assert client.post("/api/v1/tasks/nope/cancel/").status_code == 404


def test_the_list_filters_and_pages_with_a_cursor(client):
    ids = [client.post("/api/v1/tasks/", {"name": ADD, "args": [i]}, format="json").json()["id"] for i in range(5)]
    client.post("/api/v1/tasks/", {"name": TOTAL, "args": [[1]]}, format="json")
    seen, url = [], f"/api/v1/tasks/?name={ADD}&state=queued&page_size=2"
    for _ in range(5):
        page = client.get(url).json()
        seen += [task["id"] for task in page["results"]]
        url = page["next"]
        if url is None:
            break
    # every task once, newest first (one test transaction gives them one enqueued_at: ties go by id)
    assert sorted(seen) == sorted(ids) and len(seen) == 5
    rows = {str(row.id): row.enqueued_at for row in models.TaskResult.objects.all()}
    assert [rows[i] for i in seen] == sorted((rows[i] for i in seen), reverse=True)
    assert len(client.get("/api/v1/tasks/").json()["results"]) == 6
    for query, pointer in (("?state=sleeping", "#/state"), ("?page=2", "#/page"), ("?page_size=0", "#/page_size")):
        response = client.get(f"/api/v1/tasks/{query}")
        assert response.status_code == 400 and response.json()["errors"][0]["pointer"] == pointer


@pytest.mark.parametrize("body,pointer", [
    ({"chain": []}, "#/chain"),
    ({"chain": [{"name": ADD}], "group": []}, "#"),
    ({"group": [{"name": "tests.api.http_tasks.internal"}]}, "#/group/0/name"),
    ({"chord": {"header": [{"name": ADD}]}}, "#/chord"),
    ({"chain": [{"name": ADD, "args": 1}]}, "#/chain/0/args"),
    ({"chain": [{"name": ADD, "priority": 1}]}, "#/chain/0/priority"),
    ({"chain": ["add"]}, "#/chain/0"),
])
def test_bad_workflows_are_refused_and_store_nothing(client, body, pointer):
    response = client.post("/api/v1/workflows/", body, format="json")
    assert response.status_code == 400, response.content
    assert pointer in [e["pointer"] for e in response.json()["errors"]]
    assert not models.Workflow.objects.exists() and not models.TaskResult.objects.exists()


def test_a_workflow_needs_a_scope_for_each_of_its_tasks(client):
    body = {"chain": [{"name": ADD, "args": [1]}, {"name": FAILS}]}
    response = client.post("/api/v1/workflows/", body, format="json")
    assert response.status_code == 403 and FAILS in response.json()["detail"]
    assert not models.Workflow.objects.exists()
    assert http_tasks.add(1, 2) == 3  # still a plain function


def test_a_workflow_is_cancelled_once(client):
    flow = client.post("/api/v1/workflows/", {"chain": [{"name": ADD, "args": [1, 2], "countdown": 3600},
                                                        {"name": ADD, "args": [3]}]}, format="json").json()
    cancelled = client.post(f"/api/v1/workflows/{flow['id']}/cancel/")
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    assert [t["state"] for t in cancelled.json()["tasks"]] == ["cancelled"]
    again = client.post(f"/api/v1/workflows/{flow['id']}/cancel/")
    assert again.status_code == 409 and again.json()["type"] == "urn:sluice:problem:workflow-not-cancellable"
    assert client.post("/api/v1/workflows/nope/cancel/").status_code == 404
