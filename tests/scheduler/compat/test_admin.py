"""The admin of the compatibility tables: Celery periodic tasks are made and re-timed there (validated
as beat_schedule entries are); results, chords, ticks and leases are read-only."""
from django.utils import timezone

from scheduler.compat import models


def form(**fields):
    base = {"name": "report", "task": "proj.tasks.report", "args": "[1]", "kwargs": "{}", "options": "{}",
            "kind": "cron", "cron": "30 3 * * *", "interval": "", "timezone": "UTC", "enabled": "on"}
    return {**base, **fields}


def test_the_admin_creates_a_periodic_task_with_its_next_run(db, admin_client):
    response = admin_client.post("/admin/compat/celeryperiodictask/add/", form())
    assert response.status_code == 302, response.content.decode()[:2000]
    row = models.CeleryPeriodicTask.objects.get(name="report")
    assert row.source == "database" and (row.next_run_at.hour, row.next_run_at.minute) == (3, 30)


def test_a_new_interval_gets_its_first_tick_one_interval_from_now(db, admin_client):
    before = timezone.now()
    response = admin_client.post("/admin/compat/celeryperiodictask/add/",
                                 form(kind="interval", cron="", interval="00:05:00"))
    assert response.status_code == 302, response.content.decode()[:2000]
    row = models.CeleryPeriodicTask.objects.get(name="report")
    assert row.at == row.next_run_at and row.next_run_at >= before + row.interval


def test_the_admin_refuses_a_bad_cron_and_a_missing_interval(db, admin_client):
    page = admin_client.post("/admin/compat/celeryperiodictask/add/", form(cron="30 3 * *")).content.decode()
    assert "a cron expression has five fields" in page
    page = admin_client.post("/admin/compat/celeryperiodictask/add/", form(kind="interval", cron="")).content.decode()
    assert "an interval is a positive duration" in page
    assert not models.CeleryPeriodicTask.objects.exists()


def test_results_and_leases_cannot_be_added_by_hand(db, admin_client):
    for table in ("celerytaskresult", "celerychord", "celerybeattick", "celerybeatlease"):
        assert admin_client.get(f"/admin/compat/{table}/add/").status_code == 403
        assert admin_client.get(f"/admin/compat/{table}/").status_code == 200
