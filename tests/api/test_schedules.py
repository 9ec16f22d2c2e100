"""Schedules over HTTP: created, changed, enabled, disabled and run now, for tasks marked http=True."""
import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from api import keys
from scheduler import models
from tests.api import http_tasks  # noqa: F401 - registers the tasks

ADD = "tests.api.http_tasks.add"


def client_for(*scopes):
    user = User.objects.create_user(f"ops{User.objects.count()}")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {keys.create('ops', user=user, scopes=list(scopes))[1]}")
    return client


@pytest.fixture
def ops(db):
    return client_for("operate", "task:tests.api.http_tasks.*")


def test_a_schedule_is_created_changed_disabled_enabled_and_run(ops):
    created = ops.post("/api/v1/schedules/", {"name": "nightly", "task": ADD, "cron": "0 3 * * *",
                                              "timezone": "Europe/Paris", "args": [1, 2]}, format="json")
    assert created.status_code == 201, created.content
    assert (created.json()["kind"], created.json()["enabled"], created.json()["source"]) == ("cron", True, "database")
    first = created.json()["next_run_at"]
    assert ops.get("/api/v1/schedules/").json()[0]["name"] == "nightly"
    changed = ops.patch("/api/v1/schedules/nightly/", {"args": [5, 5]}, format="json").json()
    assert changed["args"] == [5, 5] and changed["next_run_at"] == first and changed["cron"] == "0 3 * * *"
    retimed = ops.patch("/api/v1/schedules/nightly/", {"every": 60}, format="json").json()
    assert (retimed["kind"], retimed["every"], retimed["cron"]) == ("interval", 60.0, "")
    assert ops.post("/api/v1/schedules/nightly/disable/").json()["enabled"] is False
    assert ops.post("/api/v1/schedules/nightly/enable/").json()["enabled"] is True
    run = ops.post("/api/v1/schedules/nightly/run/")
    assert run.status_code == 202 and run.json()["args"] == [5, 5] and run.json()["name"] == ADD
    assert ops.get(run["Location"]).json()["state"] == "queued"
    assert models.ScheduleTick.objects.get().trigger == "manual"


@pytest.mark.parametrize("body,status", [
    ({"name": "x", "task": ADD}, 400),                                        # no timing
    ({"name": "x", "task": ADD, "cron": "0 3 * * *", "every": 60}, 400),      # two timings
    ({"name": "x", "task": ADD, "cron": "not cron"}, 400),
    ({"name": "x", "task": ADD, "every": "60"}, 400),
    ({"name": "x", "task": ADD, "every": 60, "timezone": "Mars/Olympus"}, 400),
    ({"name": "x", "task": "tests.api.http_tasks.internal", "every": 60}, 400),
    ({"name": "x", "task": "tests.api.never_imported.job", "every": 60}, 400),
    ({"name": "x", "task": ADD, "every": 60, "priority": 1}, 400),
    ({"name": "x", "task": "tests.api.http_tasks.fails", "every": 60}, 403),
])
def test_bad_schedules_are_refused_and_store_nothing(db, body, status):
    ops = client_for("operate", "task:tests.api.http_tasks.add", "task:tests.api.http_tasks.internal")
    response = ops.post("/api/v1/schedules/", body, format="json")
    assert response.status_code == status, response.content
    assert not models.Schedule.objects.exists()


def test_names_are_unique_unknown_ones_404_and_a_key_needs_operate_and_the_task(ops):
    body = {"name": "hourly", "task": ADD, "every": 3600}
    assert ops.post("/api/v1/schedules/", body, format="json").status_code == 201
    assert ops.post("/api/v1/schedules/", body, format="json").status_code == 409
    for path in ("/api/v1/schedules/nope/", "/api/v1/schedules/nope/run/"):
        call = ops.get if path.endswith("nope/") else ops.post
        assert call(path).status_code == 404
    assert client_for("task:*").post("/api/v1/schedules/hourly/run/").status_code == 403
    assert client_for("operate").post("/api/v1/schedules/hourly/run/").status_code == 403
    bad = ops.patch("/api/v1/schedules/hourly/", {"every": 0}, format="json")
    assert bad.status_code == 400
    assert models.Schedule.objects.get().interval.total_seconds() == 3600
    assert not models.ScheduleTick.objects.exists()
