"""A Celery beat scheduler on Sluice: `celery beat -S sluice` keeps the periodic tasks in the database
(the app's beat_schedule is synced into it at start; more can be made in the admin), and any number
of beats may run: the one holding the lease sends, the others stand by and take over within seconds
of its death, sending the ticks it missed; a tick is recorded once, in the transaction that sends
it, so none is sent twice or skipped across a handover.

Settings (the Celery app's conf): `sluice_beat_lease_s` (default 5: how long the active beat's lease
lasts without renewal, so how soon a standby takes over).
"""
import datetime
import json
import os
import socket
import time
import uuid

from celery import beat, schedules as celery_schedules
from celery.utils.log import get_logger

from scheduler.compat import kombu_transport

logger = get_logger("sluice.celery.beat")

ALIAS = "sluice"
SCHEDULER_PATH = "scheduler.compat.celery_beat:Scheduler"
DEFAULT_LEASE_S = 5.0
PRUNE_EVERY_S = 3600  # the active beat deletes tick records older than a day this often
TICKS_KEPT = datetime.timedelta(days=1)
# One name per process: `celery beat` makes a scheduler for its banner and another to run.
_PROCESS_TOKEN = uuid.uuid4().hex[:8]


class Scheduler(beat.Scheduler):
    """Celery's Scheduler with the database as its schedule and a lease as its right to send."""

    def __init__(self, app, *args, **kwargs):
        kombu_transport.ensure_django("")
        from scheduler.compat import beat_store

        self.store = beat_store
        self.beat_id = f"{socket.gethostname()}:{os.getpid()}:{_PROCESS_TOKEN}"
        self.lease_s = float(app.conf.get("sluice_beat_lease_s") or DEFAULT_LEASE_S)
        self.active = None  # not known until the first tick, which logs what it found
        self.pruned_at = 0.0
        super().__init__(app, *args, **kwargs)

    def setup_schedule(self):
        """Sync the app's beat_schedule (and Celery's default entries) into the database."""
        self.data = {}
        # As PersistentScheduler does (Scheduler's own order lets the merge drop the defaults).
        self.merge_inplace(self.app.conf.beat_schedule)
        self.install_default_entries(self.data)
        specs = {}
        for name, entry in self.data.items():
            try:
                specs[name] = self.spec(entry)
            except ValueError as error:
                logger.error("beat: periodic task %s is left out: %s", name, error)
        created, updated, deleted = self.store.sync(specs)
        logger.info("beat: beat_schedule synced: %d created, %d updated, %d deleted", len(created), len(updated),
                    len(deleted))

    def spec(self, entry):
        """The database fields of a beat_schedule entry; raise ValueError for a schedule Sluice does
        not keep (solar)."""
        timing = entry.schedule
        spec = {"task": entry.task, "args": list(entry.args or ()), "kwargs": dict(entry.kwargs or {}),
                "options": dict(entry.options or {}), "cron": "", "interval": None,
                "timezone": str(self.app.conf.timezone or "UTC")}
        if isinstance(timing, celery_schedules.crontab):
            fields = [timing._orig_minute, timing._orig_hour, timing._orig_day_of_month,
                      timing._orig_month_of_year, timing._orig_day_of_week]
            spec.update(kind="cron", cron=" ".join(_cron_field(field) for field in fields))
        elif isinstance(timing, celery_schedules.schedule) and type(timing) is celery_schedules.schedule:
            spec.update(kind="interval", interval=timing.run_every, timezone="UTC")
        else:
            raise ValueError(f"{type(timing).__name__} schedules are not supported (crontab and intervals are)")
        try:
            json.dumps([spec["args"], spec["kwargs"], spec["options"]])
        except (TypeError, ValueError):
            raise ValueError("its args, kwargs and options must be JSON (they are stored in the database)") from None
        from scheduler import exceptions
        from scheduler.compat import models

        try:
            self.store.check(models.CeleryPeriodicTask(**spec))
        except exceptions.InvalidSchedule as error:
            raise ValueError(str(error)) from None
        return spec

    def tick(self, *args, **kwargs):
        """Hold (or take) the lease and send what is due; return the seconds to sleep: to the next
        due tick, at most a third of the lease (so it is renewed in time); a standby looks again in
        at most a second."""
        from django.db import connection, transaction

        from queueing.loops import CONNECTION_ERRORS

        try:
            with transaction.atomic():
                active = self.store.hold_lease(self.beat_id, self.lease_s)
                if active:
                    self.store.fire_due(send=self._send, beat=self.beat_id)
                    if time.monotonic() - self.pruned_at > PRUNE_EVERY_S:
                        self.pruned_at = time.monotonic()
                        self.store.prune_ticks(older_than=TICKS_KEPT)
            if active != self.active:
                if active:
                    logger.info("beat: active: the lease is held (%s)", self.beat_id)
                else:
                    holder, until = self.store.lease_holder() or ("another beat", None)
                    logger.info("beat: standby (%s): %s holds the lease%s", self.beat_id, holder,
                                f" until {until.isoformat(timespec='milliseconds')}" if until else "")
            self.active = active
            seconds = self.store.seconds_to_next() if active else None
        except CONNECTION_ERRORS as error:
            logger.warning("beat: database unreachable (%s); trying again", error)
            connection.close()
            self.active = False
            return 1.0
        renew = self.lease_s / 3
        if not active:
            return min(1.0, renew)
        return max(0.0, min(renew, self.max_interval, renew if seconds is None else seconds))

    def _send(self, row, task_id):
        entry = self.Entry(name=row.name, task=row.task, args=row.args, kwargs=row.kwargs,
                           options={**row.options, "task_id": task_id},
                           schedule=celery_schedules.schedule(datetime.timedelta(seconds=1)), app=self.app)
        logger.info("Scheduler: Sending due task %s (%s)", row.name, row.task)
        return self.apply_async(entry, producer=self.producer, advance=False)

    def close(self):
        try:
            if self.active:
                self.store.release_lease(self.beat_id)
                self.active = False
        finally:
            super().close()

    @property
    def info(self):
        return f"    . lease: {self.beat_id} ({self.lease_s:g}s, database)"


def _cron_field(value):
    if isinstance(value, (set, frozenset, list, tuple)):
        return ",".join(str(v) for v in sorted(value))
    return str(value)
