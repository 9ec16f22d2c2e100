"""Periodic schedules: firing due ticks with their task in one transaction, catch-up after
downtime, exactly once under concurrent schedulers and rollbacks, operators' actions, and the
schedules declared in code."""
import datetime
import logging
import threading

import pytest
from django.db import connection, transaction

from queueing import topics
from scheduler import exceptions, models, schedules, storage, ticker
from tests.schedapp import tasks as sched

MINUTE = datetime.timedelta(minutes=1)


def db_now():
    with connection.cursor() as cursor:
        cursor.execute("SELECT now()")
        return cursor.fetchone()[0]


def every_minute(name="beat", every=60, **options):
    return schedules.create(name=name, task=sched.beat, every=every, args=[name], **options)


def due_since(row, first):
    """Move a schedule in time: its ticks were first, first + 1 min, ... (and none fired)."""
    models.Schedule.objects.filter(id=row.id).update(at=first, next_run_at=first)


def test_a_due_tick_enqueues_its_task_with_its_record_once(db):
    row = every_minute()
    due_since(row, db_now() - datetime.timedelta(seconds=5))
    assert schedules.fire_due() == (1, False)
    tick = models.ScheduleTick.objects.get(schedule=row)
    task = models.TaskResult.objects.get(id=tick.task_id)
    assert (task.task_name, task.args, tick.trigger, tick.missed) == ("tests.schedapp.tasks.beat", ["beat"],
                                                                       "scheduled", 0)
    row.refresh_from_db()
    assert row.next_run_at == tick.tick_at + MINUTE and row.last_task_id == task.id
    assert schedules.fire_due() == (0, False)
    assert models.TaskResult.objects.count() == 1


@pytest.mark.parametrize("policy, late_s, fired, missed, triggers", [
    # Every 5 minutes, six ticks due, the latest late_s late (60 s of grace):
    ("once", 30, 1, 5, ["scheduled"]),       # one run stands for all
    ("skip", 30, 1, 5, ["scheduled"]),       # the latest is on time: it runs
    ("skip", 90, 0, 5, ["catch-up"]),        # all late: none runs, a record says they were skipped
    ("once", 90, 1, 5, ["catch-up"]),        # late, but one run stands for all
    ("all", 30, 3, 3, ["catch-up", "catch-up", "scheduled"]),  # the latest three of six run
])
def test_catch_up_after_downtime(db, policy, late_s, fired, missed, triggers):
    row = every_minute(every=300, catch_up=policy, catch_up_limit=3)
    now = db_now()
    due_since(row, now - 25 * MINUTE - datetime.timedelta(seconds=late_s))
    assert schedules.fire_due()[0] == fired
    ticks = list(models.ScheduleTick.objects.filter(schedule=row).order_by("tick_at"))
    assert [t.trigger for t in ticks] == triggers
    assert ticks[0].missed == missed
    assert models.TaskResult.objects.count() == fired == sum(t.task_id is not None for t in ticks)
    if not fired:
        assert ticks[0].error == "skipped 6 missed tick(s) (catch_up=skip)"
    row.refresh_from_db()
    assert now < row.next_run_at <= now + 5 * MINUTE


def test_a_tick_rolled_back_with_its_transaction_fires_again(db):
    row = every_minute()
    due_since(row, db_now() - datetime.timedelta(seconds=5))
    with pytest.raises(RuntimeError), transaction.atomic():
        assert schedules.fire_due()[0] == 1
        raise RuntimeError("the scheduler died mid-tick")
    topics._cache.clear()  # as in the next scheduler's process: the rolled-back queue topic is gone
    assert not models.ScheduleTick.objects.exists() and not models.TaskResult.objects.exists()
    assert schedules.fire_due()[0] == 1
    assert models.TaskResult.objects.count() == 1


def test_the_unique_tick_stops_a_tick_firing_twice(db):
    """Guards the last line of defence: a schedule moved back onto a fired tick enqueues nothing."""
    row = every_minute()
    due_since(row, db_now() - datetime.timedelta(seconds=5))
    schedules.fire_due()
    fired_at = models.ScheduleTick.objects.get().tick_at
    models.Schedule.objects.filter(id=row.id).update(next_run_at=fired_at)
    assert schedules.fire_due()[0] == 0
    assert models.TaskResult.objects.count() == 1
    row.refresh_from_db()
    assert row.next_run_at == fired_at + MINUTE


def test_a_schedule_another_scheduler_is_firing_is_left_to_it(transactional_db):
    row = every_minute()
    due_since(row, db_now() - datetime.timedelta(seconds=5))
    claimed, release = threading.Event(), threading.Event()

    def other_scheduler():
        try:
            with transaction.atomic():
                ids, _ = storage.claim_due_schedules(limit=10)
                assert ids == [row.id]
                claimed.set()
                release.wait(30)
        finally:
            connection.close()

    thread = threading.Thread(target=other_scheduler)
    thread.start()
    assert claimed.wait(30)
    assert schedules.fire_due() == (0, False)
    release.set()
    thread.join()
    assert schedules.fire_due()[0] == 1  # it died without firing: the tick is still due, and fires here
    assert models.TaskResult.objects.count() == 1


def test_a_task_that_cannot_be_enqueued_leaves_a_tick_that_says_why(db):
    row = every_minute()
    due_since(row, db_now() - datetime.timedelta(seconds=5))
    models.Schedule.objects.filter(id=row.id).update(task_name="gone.task")
    assert schedules.fire_due()[0] == 1
    tick = models.ScheduleTick.objects.get()
    assert tick.task_id is None and "No task named 'gone.task' is registered" in tick.error
    row.refresh_from_db()
    assert row.next_run_at > db_now()


def test_a_one_off_fires_once(db):
    row = schedules.create(name="once", task=sched.beat, at="2026-01-01T09:00", timezone="Europe/Paris", args=["x"])
    assert row.next_run_at.isoformat() == "2026-01-01T08:00:00+00:00"
    assert schedules.fire_due()[0] == 1  # its time passed: it runs once, now
    row.refresh_from_db()
    assert row.next_run_at is None and schedules.next_runs(row) == []
    assert schedules.fire_due()[0] == 0


def test_disable_enable_run_now_and_delete(db):
    row = every_minute()
    due_since(row, db_now() - 10 * MINUTE)
    schedules.disable("beat")
    assert schedules.fire_due()[0] == 0
    result = schedules.run_now("beat")  # a manual tick works while disabled, and moves nothing
    tick = models.ScheduleTick.objects.get()
    assert (tick.trigger, tick.task_id) == ("manual", result.id)
    enabled = schedules.enable("beat")
    assert enabled.next_run_at > db_now()  # time spent disabled is not missed
    assert schedules.fire_due()[0] == 0
    schedules.delete("beat")
    assert not models.ScheduleTick.objects.exists() and models.TaskResult.objects.count() == 1
    with pytest.raises(exceptions.ScheduleNotFound, match="No schedule named 'beat'"):
        schedules.delete("beat")


def test_next_runs_follow_the_zone(db):
    row = schedules.create(name="berlin", task=sched.beat, cron="30 2 * * *", timezone="Europe/Berlin", args=["b"])
    models.Schedule.objects.filter(id=row.id).update(
        next_run_at=datetime.datetime(2026, 3, 28, 1, 30, tzinfo=datetime.timezone.utc))
    row.refresh_from_db()
    assert [t.isoformat() for t in schedules.next_runs(row, 3)] == [
        "2026-03-28T01:30:00+00:00", "2026-03-29T01:00:00+00:00", "2026-03-30T00:30:00+00:00"]


@pytest.mark.parametrize("options, message", [
    ({"cron": "0 3 * * *", "every": 60}, "give exactly one of cron"),
    ({}, "give exactly one of cron"),
    ({"cron": "0 3 * *"}, "five fields"),
    ({"cron": "0 3 * * *", "timezone": "Europe/Pariss"}, "unknown time zone"),
    ({"every": 0.5}, "every is from one second to 100 years"),
    ({"every": 10**20}, "every is from one second to 100 years"),  # past timedelta's range
    ({"every": float("nan")}, "every is from one second to 100 years"),
    ({"every": 101 * 366 * 86400}, "every is from one second to 100 years"),
    ({"every": 60, "catch_up": "sometimes"}, "catch_up is one of skip, once, all"),
    ({"at": "tomorrow"}, "is not an ISO 8601 time"),
    ({"every": 60, "kwargs": {"tick_at": "x"}, "tick_kwarg": "tick_at"}, "kwargs has 'tick_at' already"),
])
def test_invalid_schedules_are_refused(db, options, message):
    with pytest.raises(exceptions.InvalidSchedule, match=message):
        schedules.create(name="bad", task=sched.beat, args=["x"], **options)
    assert not models.Schedule.objects.exists()


def test_names_are_unique_and_tasks_must_be_registered(db):
    every_minute()
    with pytest.raises(exceptions.ScheduleExists):
        every_minute()
    with pytest.raises(exceptions.TaskNotRegistered):
        schedules.create(name="other", task="no.such.task", every=60)


def test_declared_schedules_sync_without_touching_database_ones(db, monkeypatch):
    every_minute("made-by-hand")
    created, updated, deleted = schedules.sync()  # the shop's nightly job is declared in code too
    assert "nightly-report" in created and (updated, deleted) == ([], [])
    nightly = schedules.get("nightly-report")
    assert (nightly.source, nightly.cron, nightly.timezone, nightly.kwargs) == (
        "code", "0 3 * * *", "Europe/Paris", {"kind": "nightly"})
    assert nightly.next_run_at.astimezone(datetime.timezone(datetime.timedelta(hours=1))).hour == 3
    schedules.disable("nightly-report")
    assert schedules.sync() == ([], [], [])  # unchanged: nothing written, and still disabled
    declared = dict(schedules._declared)
    spec = declared["nightly-report"]
    declared["nightly-report"] = schedules.Declared(name=spec.name, definition={**spec.definition, "cron": "0 4 * * *"})
    monkeypatch.setattr(schedules, "_declared", declared)
    assert schedules.sync() == ([], ["nightly-report"], [])
    assert schedules.get("nightly-report").cron == "0 4 * * *" and not schedules.get("nightly-report").enabled
    monkeypatch.setattr(schedules, "_declared", {})
    created, updated, deleted = schedules.sync()
    assert "nightly-report" in deleted and (created, updated) == ([], [])
    assert list(models.Schedule.objects.values_list("name", flat=True)) == ["made-by-hand"]


def test_periodic_goes_above_task():
    with pytest.raises(exceptions.InvalidSchedule, match="above @task"):
        schedules.periodic(cron="0 3 * * *")(lambda: None)


def test_the_scheduler_loop_wakes_for_a_new_schedule_and_stops_at_once(transactional_db):
    loop = ticker.Scheduler(max_sleep=300, sync=False)
    thread = threading.Thread(target=loop.run)
    thread.start()
    try:
        # The loop sleeps (nothing is scheduled) until the trigger's NOTIFY of this insert.
        schedules.create(name="soon", task=sched.beat, at=db_now(), args=["soon"])
        for _ in range(600):
            if models.ScheduleTick.objects.exists():
                break
            loop.stop_event.wait(0.05)
        assert models.ScheduleTick.objects.get().task_id is not None
        # Woken by the NOTIFY, not by a retry after an error (which also ends a sleep, each second).
        assert loop.listener is not None and not loop.listener.closed
    finally:
        loop.stop()
        thread.join(30)
    assert not thread.is_alive()


def test_a_broken_schedule_is_retried_later_and_does_not_stop_the_others(db, caplog):
    """Guards against one schedule crash-looping a scheduler: its timing was edited into nonsense.
    Its log is one line that says why, not a traceback a minute."""
    broken, fine = every_minute("broken"), every_minute("fine")
    now = db_now()
    for row in (broken, fine):
        due_since(row, now - datetime.timedelta(seconds=5))
    models.Schedule.objects.filter(id=broken.id).update(kind="cron", cron="not a cron")
    with caplog.at_level(logging.WARNING, logger="sluice.schedules"):
        assert schedules.fire_due()[0] == 1
    assert list(models.ScheduleTick.objects.values_list("schedule__name", flat=True)) == ["fine"]
    broken.refresh_from_db()
    assert broken.next_run_at == now + schedules.RETRY_BROKEN
    [logged] = [r for r in caplog.records if "broken" in r.getMessage()]
    assert logged.levelname == "ERROR" and logged.exc_info is None
    assert "schedule broken is invalid (a cron expression has five fields" in logged.getMessage()


def test_each_caught_up_tick_can_tell_its_task_which_tick_it_is(db):
    row = every_minute(every=300, catch_up="all", tick_kwarg="tick_at")
    now = db_now()
    due_since(row, now - 10 * MINUTE - datetime.timedelta(seconds=5))
    assert schedules.fire_due()[0] == 3
    ticks = models.ScheduleTick.objects.filter(schedule=row).order_by("tick_at")
    tasks = [models.TaskResult.objects.get(id=t.task_id) for t in ticks]
    assert [t.kwargs for t in tasks] == [{"tick_at": t.tick_at.isoformat()} for t in ticks]
    with pytest.raises(exceptions.InvalidSchedule, match="tick_kwarg must be a Python identifier"):
        every_minute("other", tick_kwarg="tick at")


def tick_trigger(body):
    """SQL creating a trigger on the tick records that runs body (PL/pgSQL, NEW is the tick) once:
    on the first tick recorded that matches its IF (a sequence counts, outside transactions)."""
    return f"""
        CREATE SEQUENCE test_tick_once;
        CREATE FUNCTION test_tick_once() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN {body} RETURN NEW; END $$;
        CREATE TRIGGER test_tick_once BEFORE INSERT ON scheduler_scheduletick
            FOR EACH ROW EXECUTE FUNCTION test_tick_once();
    """


def drop_tick_trigger():
    with connection.cursor() as cursor:
        cursor.execute("DROP TRIGGER IF EXISTS test_tick_once ON scheduler_scheduletick;"
                       "DROP FUNCTION IF EXISTS test_tick_once(); DROP SEQUENCE IF EXISTS test_tick_once")


def test_a_firing_cut_after_creating_the_queue_topic_does_not_silence_a_schedule(transactional_db, caplog):
    """Guards the schedule that fired no tick in the schedulers' acceptance test on a busy machine:
    the first firing created the queue's topic, cached it, and lost its connection before its commit;
    the next firing used the cached topic, which the rollback had taken away (TopicNotFound), and
    its schedule was pushed a minute ahead."""
    assert "tasks.sched" not in [t.name for t in topics.list_topics()]
    first, second = every_minute("first"), every_minute("second")
    now = db_now()
    for row in (first, second):
        due_since(row, now - datetime.timedelta(seconds=5))
    with connection.cursor() as cursor:
        # The second schedule's tick is recorded after the first's enqueue created the topic.
        cursor.execute(tick_trigger(f"IF NEW.schedule_id = {second.id} AND nextval('test_tick_once') = 1 THEN "
                                    "PERFORM pg_terminate_backend(pg_backend_pid()); PERFORM pg_sleep(5); END IF;"))
    loop = ticker.Scheduler(max_sleep=300, sync=False)
    thread = threading.Thread(target=loop.run)
    thread.start()
    try:
        for _ in range(200):
            if models.ScheduleTick.objects.filter(schedule=second).exists():
                break
            loop.stop_event.wait(0.05)
    finally:
        loop.stop()
        thread.join(30)
        drop_tick_trigger()
    assert "database connection lost" in caplog.text  # the cut landed
    ticks = {t.schedule.name: t for t in models.ScheduleTick.objects.select_related("schedule")}
    assert sorted(ticks) == ["first", "second"], caplog.text
    for row in (first, second):
        row.refresh_from_db()
        assert row.next_run_at == ticks[row.name].tick_at + MINUTE


def test_a_passing_error_in_a_firing_is_retried_at_once(db):
    """Guards against one failed attempt (here an error raised once while its tick is recorded)
    silencing a schedule for RETRY_BROKEN: that is for a schedule that fails again."""
    row = every_minute("flaky")
    due_since(row, db_now() - datetime.timedelta(seconds=5))
    with connection.cursor() as cursor:
        cursor.execute(tick_trigger("IF nextval('test_tick_once') = 1 THEN RAISE EXCEPTION 'passing'; END IF;"))
    assert schedules.fire_due() == (1, False)
    tick = models.ScheduleTick.objects.get(schedule=row)
    row.refresh_from_db()
    assert tick.task_id is not None and row.next_run_at == tick.tick_at + MINUTE
