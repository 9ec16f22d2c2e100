"""The Celery beat scheduler on a real PostgreSQL server: beat_schedule entries become periodic tasks,
one beat holds the lease, a lapsed or released lease is taken over, and every due tick is sent
once (missed ones too), recorded in the transaction that publishes it."""
import datetime

import pytest
from celery import schedules as celery_schedules
from django.db import transaction
from django.utils import timezone

from scheduler.compat import beat_store, celery_beat, kombu_store, models
from tests.celeryapp.app import app

pytestmark = pytest.mark.django_db(transaction=True)
EVERY_SECOND = {"task": "tests.celeryapp.tasks.record", "schedule": 1.0, "args": ("beat",)}


@pytest.fixture
def beat_schedule():
    saved = app.conf.beat_schedule
    app.conf.beat_schedule = {
        "every-second": EVERY_SECOND,
        "nightly": {"task": "tests.celeryapp.tasks.add", "schedule": celery_schedules.crontab(minute=30, hour="3"),
                    "args": (1, 2), "options": {"queue": "celery"}},
    }
    schedulers = []

    def start():
        scheduler = celery_beat.Scheduler(app=app)
        schedulers.append(scheduler)
        return scheduler

    yield start
    for scheduler in schedulers:
        scheduler.close()
    app.conf.beat_schedule = saved


def test_beat_schedule_entries_become_periodic_tasks(beat_schedule):
    beat_schedule()
    rows = {row.name: row for row in models.CeleryPeriodicTask.objects.all()}
    assert rows["every-second"].kind == "interval" and rows["every-second"].interval == datetime.timedelta(seconds=1)
    assert rows["every-second"].args == ["beat"] and rows["every-second"].source == "code"
    assert (rows["nightly"].kind, rows["nightly"].cron) == ("cron", "30 3 * * *")
    assert rows["nightly"].options == {"queue": "celery"}
    assert rows["nightly"].next_run_at.time() == datetime.time(3, 30)
    assert "celery.backend_cleanup" in rows  # Celery's own default entry, as beat adds it
    anchor = rows["every-second"].at
    beat_schedule()  # a second beat starting: the interval's ticks do not move
    assert models.CeleryPeriodicTask.objects.get(name="every-second").at == anchor


class Sunrise(celery_schedules.BaseSchedule):
    """A schedule of a kind Sluice does not keep (as solar, which needs the ephem package)."""


def test_a_schedule_of_another_kind_is_refused_with_a_clear_error(beat_schedule):
    scheduler = beat_schedule()
    entry = scheduler.Entry(name="sun", task="t", schedule=Sunrise(app=app), app=app)
    with pytest.raises(ValueError, match="Sunrise schedules are not supported"):
        scheduler.spec(entry)


def test_an_entry_whose_options_are_not_json_is_refused(beat_schedule):
    scheduler = beat_schedule()
    entry = scheduler.Entry(name="odd", task="t", schedule=celery_schedules.schedule(60), app=app,
                            options={"expires": datetime.datetime(2030, 1, 1)})
    with pytest.raises(ValueError, match="must be JSON"):
        scheduler.spec(entry)


def test_entries_gone_from_the_code_go_and_database_ones_stay(beat_schedule):
    beat_schedule()
    models.CeleryPeriodicTask.objects.create(name="by-hand", task="t", kind="interval",
                                             interval=datetime.timedelta(minutes=5))
    app.conf.beat_schedule = {"every-second": EVERY_SECOND}
    beat_schedule()
    assert set(models.CeleryPeriodicTask.objects.values_list("name", flat=True)) == {
        "every-second", "by-hand", "celery.backend_cleanup"}


def test_one_holder_has_the_lease_until_it_lapses_or_is_released():
    with transaction.atomic():
        assert beat_store.hold_lease("a", 30)
        assert beat_store.hold_lease("a", 30)  # renewed
    assert not beat_store.hold_lease("b", 30)
    models.CeleryBeatLease.objects.update(expires_at=timezone.now() - datetime.timedelta(seconds=1))
    assert beat_store.hold_lease("b", 30)
    assert not beat_store.hold_lease("a", 30)
    beat_store.release_lease("b")
    assert beat_store.hold_lease("a", 30)


def test_every_due_tick_is_sent_once_missed_ones_included(beat_schedule):
    beat_schedule()
    row = models.CeleryPeriodicTask.objects.get(name="every-second")
    # As after a beat died: five ticks are due.
    now = timezone.now()
    first = now - datetime.timedelta(seconds=4.5)
    models.CeleryPeriodicTask.objects.filter(id=row.id).update(at=first, next_run_at=first)
    sent = []
    with transaction.atomic():
        assert beat_store.fire_due(send=lambda row, task_id: sent.append((row.name, task_id)), beat="test") >= 5
    ticks = list(models.CeleryBeatTick.objects.filter(periodic_task=row).order_by("tick_at"))
    assert [t.tick_at for t in ticks][:5] == [first + datetime.timedelta(seconds=n) for n in range(5)]
    assert [task_id for name, task_id in sent if name == "every-second"] == [t.task_id for t in ticks]
    # The same ticks again (a second beat that thought itself active): nothing is sent.
    models.CeleryPeriodicTask.objects.filter(id=row.id).update(next_run_at=first)
    again = []
    with transaction.atomic():
        beat_store.fire_due(send=lambda row, task_id: again.append(task_id), beat="other")
    assert not set(again) & {t.task_id for t in ticks}


def test_only_the_lease_holder_sends_and_a_standby_takes_over_after_release(beat_schedule):
    active, standby = beat_schedule(), beat_schedule()
    standby.beat_id += "-standby"  # two beats in one process (each process has one name)
    row = models.CeleryPeriodicTask.objects.get(name="every-second")
    due = timezone.now() - datetime.timedelta(seconds=2.5)
    models.CeleryPeriodicTask.objects.filter(id=row.id).update(at=due, next_run_at=due)
    before = kombu_store.size("celery")
    assert active.tick() <= active.lease_s / 3 and active.active
    assert standby.tick() <= 1.0 and not standby.active
    sent = models.CeleryBeatTick.objects.filter(periodic_task=row).count()
    assert sent >= 3
    assert kombu_store.size("celery") - before == models.CeleryBeatTick.objects.count()
    active.close()
    standby.tick()
    assert standby.active
    assert models.CeleryBeatLease.objects.get().holder == standby.beat_id


def test_old_tick_records_are_pruned_and_each_task_keeps_its_latest(beat_schedule):
    beat_schedule()
    row = models.CeleryPeriodicTask.objects.get(name="every-second")
    first = timezone.now() - datetime.timedelta(seconds=2.5)
    models.CeleryPeriodicTask.objects.filter(id=row.id).update(at=first, next_run_at=first)
    with transaction.atomic():
        beat_store.fire_due(send=lambda row, task_id: None, beat="test")
    ticks = models.CeleryBeatTick.objects.filter(periodic_task=row)
    assert ticks.count() >= 3
    ticks.update(sent_at=timezone.now() - datetime.timedelta(days=2))
    latest, before = ticks.order_by("-tick_at").first(), ticks.count()
    assert beat_store.prune_ticks(older_than=datetime.timedelta(days=1)) == before - 1
    assert list(ticks) == [latest]
