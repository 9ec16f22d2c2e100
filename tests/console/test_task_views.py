"""The console's task and schedule pages: states, retry and cancel, enable, disable and run now."""
import datetime

import pytest
from django.contrib.auth.models import User
from django.test import Client

from console import models
from scheduler import models as task_models
from scheduler import schedules
from tests.sampleapp import tasks as sample


@pytest.fixture
def staff_client(db):
    client = Client()
    client.force_login(User.objects.create_superuser("ops", password="pw-ops-1"))
    return client


def test_tasks_are_listed_by_state_and_cancelled_then_retried(staff_client):
    result = sample.add.enqueue(1, 2)
    page = staff_client.get("/console/tasks/").content.decode()
    assert "queued: 1" in page and str(result.id) in page
    staff_client.post(f"/console/tasks/{result.id}/cancel")
    assert result.refresh().state == "cancelled"
    assert "cancelled: 1" in staff_client.get("/console/tasks/?state=cancelled").content.decode()
    staff_client.post(f"/console/tasks/{result.id}/retry")
    assert result.refresh().state == "queued"
    assert list(models.AuditEntry.objects.order_by("id").values_list("action", "before", "after")) == [
        ("task cancel", {"state": "queued"}, {"state": "cancelled"}),
        ("task retry", {"state": "cancelled"}, {"state": "queued"})]


def test_a_task_that_cannot_be_retried_is_refused_and_nothing_is_stored(staff_client):
    result = sample.add.enqueue(1, 2)
    response = staff_client.post(f"/console/tasks/{result.id}/retry", follow=True)
    assert 'class="message error"' in response.content.decode()
    assert result.refresh().state == "queued" and not models.AuditEntry.objects.exists()


def test_a_schedule_is_disabled_enabled_and_run_now(staff_client):
    schedules.create(name="nightly", task=sample.add, every=datetime.timedelta(hours=1), args=[1, 2])
    assert "nightly" in staff_client.get("/console/schedules/").content.decode()
    staff_client.post("/console/schedules/nightly/disable")
    assert not task_models.Schedule.objects.get(name="nightly").enabled
    staff_client.post("/console/schedules/nightly/enable")
    assert task_models.Schedule.objects.get(name="nightly").enabled
    staff_client.post("/console/schedules/nightly/run")
    assert task_models.TaskResult.objects.filter(task_name=sample.add.name).count() == 1
    assert [e.action for e in models.AuditEntry.objects.order_by("id")] == [
        "schedule disable", "schedule enable", "schedule run"]
