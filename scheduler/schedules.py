"""Periodic schedules: create, enable, disable, run now and delete them, declare them in code with
@periodic, and fire due ticks: each tick's record and the task it enqueues commit together."""
import dataclasses
import datetime
import logging
import zlib

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models.functions import Now
from django.utils import timezone as django_timezone

from queueing.loops import CONNECTION_ERRORS
from scheduler import cron as timing, exceptions, models, storage, tasks

logger = logging.getLogger("sluice.schedules")

CHANNEL = "sluice_schedules"  # NOTIFYed by a trigger on every change to the schedules (migration 0003)
RETRY_BROKEN = datetime.timedelta(minutes=1)
MAX_TICKS = 10_000  # due ticks looked at in one firing; beyond, the rest count as missed
MAX_EVERY = datetime.timedelta(days=36_525)  # an interval's longest (100 years: its ticks stay datetimes)
TIMING = ("kind", "cron", "interval", "at", "timezone")
DEFINITION = ("task_name", "args", "kwargs", *TIMING, "catch_up", "catch_up_limit", "tick_kwarg")
_declared: dict[str, "Declared"] = {}


def grace():
    """Seconds a tick may be late and still count as on time (not missed), by the database clock."""
    return datetime.timedelta(seconds=settings.SLUICE.get("SCHEDULE_GRACE_S", 60))


# Definition and validation.


def build(*, name, task, cron=None, every=None, at=None, timezone="UTC", args=(), kwargs=None, catch_up="once",
          catch_up_limit=10, tick_kwarg="", enabled=True, source=models.Schedule.Source.DATABASE, now=None):
    """An unsaved, validated Schedule with its next_run_at; raise InvalidSchedule (or
    TaskNotRegistered, NotJSON). task is a Task or a registered task's name. Exactly one of cron (an
    expression), every (seconds or a timedelta, with at as its first tick) and at (alone: once, an
    aware datetime or an ISO 8601 time read in timezone)."""
    task_name = task.name if isinstance(task, tasks.Task) else task
    tasks.get(task_name)
    if not isinstance(name, str) or not 1 <= len(name) <= 200 or name != name.strip():
        raise exceptions.InvalidSchedule(reason="a schedule's name is 1 to 200 characters, no outer spaces")
    tz = timing.zone(timezone)
    if (cron is not None) + (every is not None) + (at is not None and every is None) != 1:
        raise exceptions.InvalidSchedule(reason="give exactly one of cron, every (with an optional first tick at) "
                                                "and at (once)")
    if catch_up not in models.Schedule.CatchUp.values:
        raise exceptions.InvalidSchedule(reason=f"catch_up is one of {', '.join(models.Schedule.CatchUp.values)}")
    if not isinstance(catch_up_limit, int) or not 1 <= catch_up_limit <= 1000:
        raise exceptions.InvalidSchedule(reason="catch_up_limit is a whole number from 1 to 1000")
    tick_kwarg = tick_kwarg or ""
    if tick_kwarg and (not tick_kwarg.isidentifier() or len(tick_kwarg) > 100):
        raise exceptions.InvalidSchedule(reason=f"tick_kwarg must be a Python identifier, not {tick_kwarg!r}")
    args, kwargs = list(args), dict(kwargs or {})
    if tick_kwarg and tick_kwarg in kwargs:
        raise exceptions.InvalidSchedule(
            reason=f"kwargs has {tick_kwarg!r} already, which the tick's time (tick_kwarg) would replace at every tick")
    tasks.check_json(args, what="arguments", task=task_name)
    tasks.check_json(kwargs, what="arguments", task=task_name)
    now = now or django_timezone.now()
    if isinstance(at, str):
        at = timing.local_wall_time(at, tz)
    if at is not None and (not isinstance(at, datetime.datetime) or at.tzinfo is None):
        raise exceptions.InvalidSchedule(reason="at is an aware datetime or an ISO 8601 time")
    row = models.Schedule(name=name, task_name=task_name, args=args, kwargs=kwargs, timezone=tz.key,
                          catch_up=catch_up, catch_up_limit=catch_up_limit, tick_kwarg=tick_kwarg, enabled=enabled,
                          source=source)
    if cron is not None:
        timing.check_cron(cron)
        row.kind, row.cron = models.Schedule.Kind.CRON, cron
    elif every is not None:
        if isinstance(every, (int, float)) and not isinstance(every, bool):
            try:
                every = datetime.timedelta(seconds=every)
            except (OverflowError, ValueError):  # past timedelta's range (a billion days), or NaN
                every = None
        if (not isinstance(every, datetime.timedelta) or every < datetime.timedelta(seconds=1)
                or every > MAX_EVERY):
            raise exceptions.InvalidSchedule(reason="every is from one second to 100 years (a number of seconds or "
                                                    "a timedelta)")
        row.kind, row.interval, row.at = models.Schedule.Kind.INTERVAL, every, at or now + every
    else:
        row.kind, row.at = models.Schedule.Kind.ONCE, at
    row.next_run_at = first_tick(row, now)
    return row


def first_tick(schedule, now):
    """Where a new (or re-enabled, or re-timed) schedule starts: its first tick at or after now; a
    one-off whose time has passed still fires, once, at once."""
    if schedule.kind == models.Schedule.Kind.ONCE:
        return schedule.at
    return timing.next_tick(schedule, now - datetime.timedelta(microseconds=1))


def create(**definition):
    """Create a schedule (see build); raise ScheduleExists, InvalidSchedule."""
    row = build(**definition)
    try:
        with transaction.atomic():
            row.save()
    except IntegrityError:
        raise exceptions.ScheduleExists(name=row.name) from None
    return row


def change(name, **changes):
    """Change a schedule stored in the database; changes are build()'s arguments. Give cron, every or
    at to re-time it (the others of the three are then dropped); its next tick is then the first from
    now, as it is when the time zone changes. Return the schedule. Raises ScheduleNotFound,
    InvalidSchedule (also for a schedule declared in code, which is changed in code)."""
    with transaction.atomic():
        row = _locked(name)
        if row.source != models.Schedule.Source.DATABASE:
            raise exceptions.InvalidSchedule(reason=f"schedule {name!r} is declared in code (@periodic): change it there")
        definition = {"task": row.task_name, "timezone": row.timezone, "args": row.args, "kwargs": row.kwargs,
                      "catch_up": row.catch_up, "catch_up_limit": row.catch_up_limit, "tick_kwarg": row.tick_kwarg,
                      "enabled": row.enabled}
        retimed = any(k in changes for k in ("cron", "every", "at"))
        if not retimed:
            Kind = models.Schedule.Kind
            definition.update({Kind.CRON: {"cron": row.cron}, Kind.INTERVAL: {"every": row.interval, "at": row.at},
                               Kind.ONCE: {"at": row.at}}[row.kind])
        new = build(name=name, **{**definition, **changes})
        keep_next = not retimed and new.timezone == row.timezone and new.enabled == row.enabled
        fields = ["task_name", "args", "kwargs", "timezone", "catch_up", "catch_up_limit", "tick_kwarg", "enabled",
                  "kind", "cron", "interval", "at"] + ([] if keep_next else ["next_run_at"])
        for field in fields:
            setattr(row, field, getattr(new, field))
        row.save(update_fields=fields)
        models.Schedule.objects.filter(id=row.id).update(updated_at=Now())
    return get(name)


def get(name):
    try:
        return models.Schedule.objects.get(name=name)
    except models.Schedule.DoesNotExist:
        raise exceptions.ScheduleNotFound(name=name) from None


def next_runs(schedule, count=5, now=None):
    """The next count instants schedule fires at (UTC), from its next_run_at; [] when disabled or done."""
    if not schedule.enabled or schedule.next_run_at is None:
        return []
    return [schedule.next_run_at, *timing.next_ticks(schedule, schedule.next_run_at, count - 1)]


# Operators' actions.


def enable(name):
    """Enable a schedule; its next tick is the first from now (time spent disabled is not missed).
    Return the schedule; enabling an enabled one changes nothing."""
    with transaction.atomic():
        row = _locked(name)
        if not row.enabled:
            row.enabled = True
            done = row.kind == models.Schedule.Kind.ONCE and row.ticks.exists()
            row.next_run_at = None if done else first_tick(row, django_timezone.now())
            row.save(update_fields=["enabled", "next_run_at"])
    return row


def disable(name):
    """Disable a schedule: it fires nothing until enabled (run-now still works)."""
    with transaction.atomic():
        row = _locked(name)
        if row.enabled:
            row.enabled = False
            row.save(update_fields=["enabled"])
    return row


def delete(name):
    """Delete a schedule and its tick records (tasks it enqueued stay)."""
    if not models.Schedule.objects.filter(name=name).delete()[0]:
        raise exceptions.ScheduleNotFound(name=name)


def run_now(name):
    """Enqueue the schedule's task now, outside its timing (a manual tick); return the task's Result.

    The tick record and the enqueue commit together; the schedule's next tick does not move.
    """
    with transaction.atomic():
        row = _locked(name)
        now = django_timezone.now()
        tick = storage.insert_tick(schedule_id=row.id, tick_at=now, trigger=models.ScheduleTick.Trigger.MANUAL,
                                   missed=0)
        result = tasks.get(row.task_name).enqueue(*row.args, **_kwargs(row, now))
        models.ScheduleTick.objects.filter(id=tick).update(task_id=result.id)
        models.Schedule.objects.filter(id=row.id).update(last_tick_at=now, last_task_id=result.id)
    return result


def _locked(name):
    # Waits for a scheduler firing this schedule to commit (its transaction is short).
    try:
        return models.Schedule.objects.select_for_update().get(name=name)
    except models.Schedule.DoesNotExist:
        raise exceptions.ScheduleNotFound(name=name) from None


# Firing.


def fire_due(*, limit=100):
    """Fire the due ticks of up to limit due schedules in one transaction; return (ticks fired,
    whether more schedules may be due).

    Each schedule is claimed with FOR UPDATE SKIP LOCKED; its tick records, the tasks they enqueue
    and its advanced next_run_at commit together, so a crash rolls all of them back and another
    scheduler fires the same ticks; the unique (schedule, tick_at) stops a tick firing twice.
    """
    fired = 0
    with transaction.atomic():
        ids, now = storage.claim_due_schedules(limit=limit)
        for row in models.Schedule.objects.filter(id__in=ids).order_by("next_run_at", "id"):
            fired += _fire_or_back_off(row, now)
    return fired, len(ids) == limit


def _fire_or_back_off(row, now):
    """Fire a claimed schedule in a savepoint; if that fails, once more at once; if that fails too
    (or its definition is invalid), retry it RETRY_BROKEN later: one broken schedule must not stop
    the others, nor be claimed again at once. Connection errors propagate (the whole firing rolls
    back)."""
    retry_at = (now + RETRY_BROKEN).isoformat()
    for attempt in (1, 2):
        try:
            with transaction.atomic():
                return _fire(row, now)
        except CONNECTION_ERRORS:
            raise
        except exceptions.InvalidSchedule as error:
            # A timing edited into nonsense behind the commands' back: trying again at once would
            # fail the same way, and the reason says all a traceback would.
            logger.error("schedule %s is invalid (%s): fix or disable it; retrying at %s", row.name,
                         error.data.get("reason", error), retry_at, extra={"schedule": row.name})
            break
        except Exception:
            if attempt == 1:
                # A passing error (a topic taken away under the producers' cache) must not silence
                # a schedule for a minute, and the retry keeps its ticks where they are.
                logger.warning("schedule %s could not fire; trying again at once", row.name, exc_info=True,
                               extra={"schedule": row.name})
                continue
            logger.exception("schedule %s could not fire; retrying at %s", row.name, retry_at,
                             extra={"schedule": row.name})
    models.Schedule.objects.filter(id=row.id).update(next_run_at=now + RETRY_BROKEN)
    return 0


def _fire(row, now):
    due, after = due_ticks(row, now)
    missed = len(due) - 1 if due else 0
    on_time = due and now - due[-1] <= grace()
    kind = models.Schedule.CatchUp
    if row.catch_up == kind.ALL:
        firing = due[-row.catch_up_limit:]
        missed = len(due) - len(firing)
    elif row.catch_up == kind.ONCE or on_time:
        firing = due[-1:]
    else:
        firing = []  # skip: the latest is late too
    fired = 0
    last_tick, last_task = row.last_tick_at, row.last_task_id
    if not firing:
        # Record that the missed ticks were skipped, so list/show tell why nothing ran.
        storage.insert_tick(schedule_id=row.id, tick_at=due[-1], trigger=models.ScheduleTick.Trigger.CATCH_UP,
                            missed=missed)
        models.ScheduleTick.objects.filter(schedule_id=row.id, tick_at=due[-1]).update(
            error=f"skipped {len(due)} missed tick(s) (catch_up=skip)")
    for index, tick_at in enumerate(firing):
        late = now - tick_at > grace() or tick_at != due[-1]
        trigger = models.ScheduleTick.Trigger.CATCH_UP if late else models.ScheduleTick.Trigger.SCHEDULED
        tick = storage.insert_tick(schedule_id=row.id, tick_at=tick_at, trigger=trigger,
                                   missed=missed if index == 0 else 0)
        if tick is None:
            logger.warning("schedule %s: tick %s was fired already", row.name, tick_at.isoformat(),
                           extra={"schedule": row.name, "tick_at": tick_at})
            continue
        task_id, error = _enqueue(row, tick_at)
        models.ScheduleTick.objects.filter(id=tick).update(task_id=task_id, error=error)
        last_tick, last_task = tick_at, task_id or last_task
        fired += 1
    models.Schedule.objects.filter(id=row.id).update(next_run_at=after, last_tick_at=last_tick,
                                                     last_task_id=last_task)
    return fired


def due_ticks(row, now):
    """(the ticks due by now from next_run_at, the first tick after now). After a long downtime of a
    frequent schedule, only the ticks of the last day (hour, minute) are walked: older ones are
    missed whatever the policy, and walking each would hold the schedule's lock for long."""
    starts = [row.next_run_at] + [now - datetime.timedelta(seconds=s) for s in (86400, 3600, 60)]
    for start in starts:
        if start < row.next_run_at:
            continue
        tick = start if start == row.next_run_at else timing.next_tick(row, start)
        due = []
        while tick is not None and tick <= now and len(due) <= MAX_TICKS:
            due.append(tick)
            tick = timing.next_tick(row, tick)
        if len(due) <= MAX_TICKS:
            break
    return (due or [row.next_run_at]), (tick if tick is None or tick > now else timing.next_tick(row, now))


def _kwargs(row, tick_at):
    return {**row.kwargs, row.tick_kwarg: tick_at.isoformat()} if row.tick_kwarg else row.kwargs


def _enqueue(row, tick_at):
    """Enqueue the schedule's task in a savepoint; (task id, '') or (None, why not)."""
    try:
        with transaction.atomic():
            return tasks.get(row.task_name).enqueue(*row.args, **_kwargs(row, tick_at)).id, ""
    except exceptions.SchedulerError as error:
        logger.error("schedule %s: no task enqueued: %s", row.name, error, extra={"schedule": row.name})
        return None, str(error)


def prune_ticks(*, keep_s, limit=1000):
    """Delete old tick records (each schedule keeps its last); return how many went."""
    with transaction.atomic():
        return storage.prune_ticks(keep_s=keep_s, limit=limit)


# Schedules declared in code.


@dataclasses.dataclass(frozen=True, kw_only=True)
class Declared:
    name: str
    definition: dict


def periodic(*, cron=None, every=None, at=None, timezone="UTC", name=None, args=(), kwargs=None, catch_up="once",
             catch_up_limit=10, tick_kwarg=""):
    """Declare a schedule for a task, above its @task: `@periodic(cron="0 3 * * *", timezone="Europe/Paris")`.

    Declared schedules are created or updated in the database when a scheduler starts (sync());
    their name defaults to the task's. An operator's enable/disable survives the sync.
    """
    def declare(definition):
        if not isinstance(definition, tasks.Task):
            raise exceptions.InvalidSchedule(reason="put @periodic above @task (it schedules a task)")
        spec = dict(task=definition.name, cron=cron, every=every, at=at, timezone=timezone, args=tuple(args),
                    kwargs=dict(kwargs or {}), catch_up=catch_up, catch_up_limit=catch_up_limit, tick_kwarg=tick_kwarg)
        declared = Declared(name=name or definition.name, definition=spec)
        build(name=declared.name, **spec)  # fail at import, not at sync
        known = _declared.get(declared.name)
        if known is not None and known.definition["task"] != definition.name:
            raise exceptions.InvalidSchedule(reason=f"schedule {declared.name!r} is declared twice")
        _declared[declared.name] = declared
        return definition

    return declare


def declared():
    tasks.discover()
    return dict(_declared)


def sync():
    """Create or update the schedules declared in code and delete code-declared ones no longer
    declared; never touch a schedule created in the database. Return (created, updated, deleted)
    names. Several schedulers starting at once sync one after the other."""
    specs = declared()
    now = django_timezone.now()
    created, updated = [], []
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [zlib.crc32(b"sluice.schedules.sync")])
        existing = {s.name: s for s in models.Schedule.objects.select_for_update()}
        for name, spec in specs.items():
            row = build(name=name, source=models.Schedule.Source.CODE, now=now, **spec.definition)
            old = existing.get(name)
            if old is None:
                row.save()
                created.append(name)
            elif old.source != models.Schedule.Source.CODE:
                logger.warning("schedule %s is declared in code and was created in the database: the database's "
                               "is kept", name, extra={"schedule": name})
            elif _changed(old, row):
                retimed = any(getattr(old, f) != getattr(row, f) for f in TIMING)
                for field in DEFINITION:
                    setattr(old, field, getattr(row, field))
                if retimed:
                    old.next_run_at = row.next_run_at if old.enabled else None
                old.save()
                updated.append(name)
        gone = [n for n, s in existing.items() if s.source == models.Schedule.Source.CODE and n not in specs]
        models.Schedule.objects.filter(name__in=gone).delete()
    return created, updated, gone


def _changed(old, new):
    if old.kind == models.Schedule.Kind.INTERVAL and new.kind == old.kind and old.interval == new.interval:
        new.at = old.at  # an interval declared without a first tick keeps the one it was created with
    return any(getattr(old, f) != getattr(new, f) for f in DEFINITION)
