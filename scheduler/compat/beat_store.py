"""The Sluice side of the Celery beat scheduler: periodic tasks in the database, the lease that makes
one beat the active one, and the sending of due ticks, each recorded once under a unique (periodic
task, tick time) in the transaction that sends it."""
import datetime
import logging
import uuid
import zlib

from django.db import connection, transaction
from django.utils import timezone

from queueing.loops import CONNECTION_ERRORS
from scheduler import cron as timing, exceptions, schedules
from scheduler.compat import models

logger = logging.getLogger("sluice.celery.beat")

LEASE = "celery beat"
CATCH_UP_LIMIT = 100  # due ticks of one periodic task sent in a firing; older ones are missed, and logged
TICK_IDS = uuid.UUID("1c5d9f0e-6b7a-4f43-9a55-2a8f0c6d3e71")  # namespace of the ticks' task ids
TIMING = ("kind", "cron", "interval", "timezone")
DEFINITION = ("task", "args", "kwargs", "options", *TIMING)

_TICK = f"""
INSERT INTO {models.CeleryBeatTick._meta.db_table} (periodic_task_id, tick_at, sent_at, task_id, beat)
VALUES (%(periodic_task)s, %(tick_at)s, now(), %(task_id)s, %(beat)s)
ON CONFLICT (periodic_task_id, tick_at) DO NOTHING
RETURNING id
"""

# Taken when free or lapsed, renewed by its holder. The row stays locked until the caller's
# transaction ends, so a standby taking over waits for the active beat's firing to commit.
_HOLD = f"""
INSERT INTO {models.CeleryBeatLease._meta.db_table} AS lease (name, holder, acquired_at, expires_at)
VALUES (%(name)s, %(holder)s, now(), now() + %(seconds)s * interval '1 second')
ON CONFLICT (name) DO UPDATE
SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at,
    acquired_at = CASE WHEN lease.holder = EXCLUDED.holder THEN lease.acquired_at ELSE now() END
WHERE lease.holder = EXCLUDED.holder OR lease.expires_at < now()
RETURNING holder
"""


def tick_task_id(name, tick_at):
    """The task id a tick is sent with: the same for the same tick, whoever sends it."""
    return str(uuid.uuid5(TICK_IDS, f"{name}@{tick_at.isoformat()}"))


# The lease.


def hold_lease(holder, seconds):
    """Take the lease, or renew it, for seconds; return whether holder has it. Call it inside the
    transaction that fires the ticks."""
    with connection.cursor() as cursor:
        cursor.execute(_HOLD, {"name": LEASE, "holder": holder, "seconds": seconds})
        return cursor.fetchone() is not None


def lease_holder():
    """(holder, expires_at) of the lease, or None if no beat ever took it."""
    return models.CeleryBeatLease.objects.filter(name=LEASE).values_list("holder", "expires_at").first()


def release_lease(holder):
    """Let the lease lapse now if holder has it, so a standby takes over at its next look."""
    models.CeleryBeatLease.objects.filter(name=LEASE, holder=holder).update(expires_at=timezone.now())


# Periodic tasks.


def sync(specs):
    """Create or update the periodic tasks of the app's beat_schedule (specs: name -> a dict of
    DEFINITION's fields), delete those of the code no longer in it; never touch one created in the
    database. Return (created, updated, deleted) names. Beats starting at once sync one by one."""
    now = timezone.now()
    created, updated = [], []
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [zlib.crc32(b"sluice.celery.beat.sync")])
        existing = {row.name: row for row in models.CeleryPeriodicTask.objects.select_for_update()}
        for name, spec in specs.items():
            row = existing.get(name)
            if row is None:
                row = models.CeleryPeriodicTask(name=name, source=models.CeleryPeriodicTask.Source.CODE, **spec)
                retime(row, now)
                row.save()
                created.append(name)
            elif row.source != models.CeleryPeriodicTask.Source.CODE:
                logger.warning("periodic task %s is in beat_schedule and was created in the database: the "
                               "database's is kept", name)
            elif any(getattr(row, field) != spec[field] for field in DEFINITION):
                retimed = any(getattr(row, field) != spec[field] for field in TIMING)
                for field in DEFINITION:
                    setattr(row, field, spec[field])
                if retimed:
                    retime(row, now)
                row.save()
                updated.append(name)
        gone = [name for name, row in existing.items()
                if row.source == models.CeleryPeriodicTask.Source.CODE and name not in specs]
        models.CeleryPeriodicTask.objects.filter(name__in=gone).delete()
    return created, updated, gone


def retime(row, now):
    """Set a new or re-timed periodic task's first tick: an interval's ticks are counted from one
    interval after now; a cron's first tick is its next one."""
    check(row)
    if row.kind == models.CeleryPeriodicTask.Kind.INTERVAL:
        row.at = now + row.interval
    row.next_run_at = timing.next_tick(row, now - datetime.timedelta(microseconds=1))


def check(row):
    """Raise InvalidSchedule unless the row's timing is whole: a valid cron, or a positive interval."""
    timing.zone(row.timezone)
    if row.kind == models.CeleryPeriodicTask.Kind.CRON:
        timing.check_cron(row.cron)
    elif row.kind == models.CeleryPeriodicTask.Kind.INTERVAL:
        if not isinstance(row.interval, datetime.timedelta) or row.interval <= datetime.timedelta(0):
            raise exceptions.InvalidSchedule(reason="an interval is a positive duration")
    else:
        raise exceptions.InvalidSchedule(reason=f"kind is cron or interval, not {row.kind!r}")


# Firing.


def fire_due(*, send, beat, limit=100):
    """Send the due ticks of up to limit periodic tasks, in the caller's transaction; return how
    many were sent. send(row, task_id) publishes one tick's task.

    Each periodic task is claimed with FOR UPDATE SKIP LOCKED; each tick is recorded (once: the
    unique (periodic task, tick time)) and sent in a savepoint, and its next tick advanced, so a
    publish on a Sluice broker commits with its record or not at all. A task that fails to send
    is logged and keeps its tick, tried again at the next firing.
    """
    with connection.cursor() as cursor:
        cursor.execute("SELECT now()")
        now = cursor.fetchone()[0]
    rows = (models.CeleryPeriodicTask.objects.select_for_update(skip_locked=True)
            .filter(enabled=True, next_run_at__lte=now).order_by("next_run_at")[:limit])
    sent = 0
    for row in rows:
        try:
            with transaction.atomic():
                sent += _fire(row, now, send, beat)
        except CONNECTION_ERRORS:
            raise
        except Exception:
            logger.exception("periodic task %s could not be sent; trying again at the next tick", row.name)
    return sent


def _fire(row, now, send, beat):
    due, after = schedules.due_ticks(row, now)
    if len(due) > CATCH_UP_LIMIT:
        logger.warning("periodic task %s: %d missed ticks not sent (at most %d are caught up)", row.name,
                       len(due) - CATCH_UP_LIMIT, CATCH_UP_LIMIT)
        due = due[-CATCH_UP_LIMIT:]
    sent = 0
    for tick_at in due:
        task_id = tick_task_id(row.name, tick_at)
        with connection.cursor() as cursor:
            cursor.execute(_TICK, {"periodic_task": row.id, "tick_at": tick_at, "task_id": task_id, "beat": beat})
            recorded = cursor.fetchone() is not None
        if recorded:
            send(row, task_id)
            sent += 1
    models.CeleryPeriodicTask.objects.filter(id=row.id).update(
        next_run_at=after, last_run_at=due[-1], total_run_count=row.total_run_count + sent)
    return sent


def seconds_to_next():
    """Seconds until the earliest enabled periodic task is due (negative: overdue); None if none is."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT EXTRACT(EPOCH FROM min(next_run_at) - clock_timestamp())::float8 "
                       f"FROM {models.CeleryPeriodicTask._meta.db_table} WHERE enabled")
        return cursor.fetchone()[0]


def prune_ticks(*, older_than, limit=10_000):
    """Delete tick records sent more than older_than (a timedelta) ago, at most limit of them, each
    periodic task keeping its latest; return how many went. A tick's record is only needed while a
    beat could send that tick again, which it never does once its periodic task moved past it."""
    table = models.CeleryBeatTick._meta.db_table
    with connection.cursor() as cursor:
        # The latest tick of each task stays, so a task's last sending is always on record.
        cursor.execute(f"""
            DELETE FROM {table} WHERE id IN (
                SELECT id FROM {table} tick
                 WHERE sent_at < now() - %(older)s
                   AND tick_at < (SELECT max(tick_at) FROM {table} latest
                                   WHERE latest.periodic_task_id = tick.periodic_task_id)
                 LIMIT %(limit)s)""", {"older": older_than, "limit": limit})
        return cursor.rowcount

