import pytest

from scheduler import models
from tests.sampleapp import tasks as sample


@pytest.fixture
def staff(admin_client):
    return admin_client


def test_the_admin_lists_tasks_and_shows_one_with_its_attempts(db, staff):
    result = sample.add.enqueue(1, 2)
    models.TaskAttempt.objects.create(task_id=result.id, number=1, worker="host/1")
    assert str(result.id) in staff.get("/admin/scheduler/taskresult/").content.decode()
    page = staff.get(f"/admin/scheduler/taskresult/{result.id}/change/").content.decode()
    assert "host/1" in page


def test_admin_actions_cancel_and_retry(db, staff):
    queued, running = sample.add.enqueue(1, 2), sample.add.enqueue(3, 4)
    models.TaskResult.objects.filter(id=running.id).update(state="running")
    staff.post("/admin/scheduler/taskresult/", {"action": "cancel", "_selected_action": [queued.id, running.id]})
    assert (queued.refresh().state, running.refresh().state) == ("cancelled", "running")
    staff.post("/admin/scheduler/taskresult/", {"action": "retry", "_selected_action": [queued.id]})
    assert queued.refresh().state == "queued"


def test_the_admin_search_takes_an_id_or_a_name(db, staff):
    result = sample.add.enqueue(1, 2)
    assert str(result.id) in staff.get("/admin/scheduler/taskresult/", {"q": str(result.id)}).content.decode()
    assert staff.get("/admin/scheduler/taskresult/", {"q": "tests.sampleapp"}).status_code == 200


def test_tasks_and_workflows_are_not_deleted_in_the_admin(db, staff):
    """Regression: a task row deleted under its worker or its workflow broke them; they are
    cancelled and pruned instead."""
    result = sample.add.enqueue(1, 2)
    assert staff.post(f"/admin/scheduler/taskresult/{result.id}/delete/", {"post": "yes"}).status_code == 403
    listing = staff.get("/admin/scheduler/taskresult/").content.decode()
    assert "delete_selected" not in listing
    assert models.TaskResult.objects.filter(id=result.id).exists()
    assert "delete_selected" not in staff.get("/admin/scheduler/workflow/").content.decode()
