"""The workflows' admin: listed, one shown with its steps, cancelled by an action."""
from scheduler.workflows import chain, group
from tests.sampleapp import tasks as sample


def test_the_admin_lists_workflows_shows_steps_and_cancels(db, admin_client):
    flow = chain(group(sample.add.s(1, 1), sample.add.s(2, 2)), sample.total.s()).enqueue()
    listing = admin_client.get("/admin/scheduler/workflow/").content.decode()
    assert str(flow.id) in listing and "chain(group(add×2), total)" in listing
    page = admin_client.get(f"/admin/scheduler/workflow/{flow.id}/change/").content.decode()
    assert "tests.sampleapp.tasks.total" in page and "2.1" in page
    admin_client.post("/admin/scheduler/workflow/", {"action": "cancel", "_selected_action": [flow.id]})
    assert flow.refresh().state == "cancelled"
    assert {t.state for t in flow.tasks()} == {"cancelled"}
