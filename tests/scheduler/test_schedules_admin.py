"""The admin creates schedules validated as the Python API does, and acts on them."""
from scheduler import cron, models, schedules
from tests.schedapp import tasks as sched


def form(**fields):
    base = {"name": "nightly", "task_name": sched.beat.name, "args": '["n"]', "kwargs": "{}", "kind": "cron",
            "cron": "0 3 * * *", "interval": "", "at": "", "timezone": "Europe/Paris", "enabled": "on",
            "catch_up": "once", "catch_up_limit": "10", "ticks-TOTAL_FORMS": "0", "ticks-INITIAL_FORMS": "0"}
    return {**base, **fields}


def test_the_admin_creates_a_schedule_with_its_next_run(db, admin_client):
    response = admin_client.post("/admin/scheduler/schedule/add/", form())
    assert response.status_code == 302, response.content.decode()[:2000]
    row = schedules.get("nightly")
    assert row.next_run_at is not None and row.next_run_at.astimezone(cron.zone("Europe/Paris")).hour == 3
    assert "nightly" in admin_client.get("/admin/scheduler/schedule/").content.decode()


def test_the_admin_refuses_what_the_api_refuses(db, admin_client):
    page = admin_client.post("/admin/scheduler/schedule/add/", form(cron="0 3 * *")).content.decode()
    assert "a cron expression has five fields" in page
    page = admin_client.post("/admin/scheduler/schedule/add/", form(timezone="Europe/Pariss")).content.decode()
    assert "unknown time zone" in page
    assert not models.Schedule.objects.exists()


def test_admin_actions_disable_and_run_now(db, admin_client):
    row = schedules.create(name="pulse", task=sched.beat, every=60, args=["p"])
    admin_client.post("/admin/scheduler/schedule/", {"action": "disable", "_selected_action": [row.id]})
    assert not schedules.get("pulse").enabled
    admin_client.post("/admin/scheduler/schedule/", {"action": "run_now", "_selected_action": [row.id]})
    assert models.ScheduleTick.objects.get().trigger == "manual"
