"""Delayed records: schedule, cancel and reschedule; the mover that appends them to the log when due."""
import datetime
import logging
import time

import psycopg
from django.conf import settings
from django.db import connection
from django.utils import timezone

from queueing import exceptions, loops, models, types, wakeups
from queueing.storage import delayed as delayed_storage

logger = logging.getLogger("sluice.delayed")

CHANNEL = "sluice_delayed"
MAX_DELAY = datetime.timedelta(days=366)
# RocketMQ's 18 delay levels, for producers ported from it: delayTimeLevel=1 is 1 s, 18 is 2 h.
DELAY_LEVELS = [
    1, 5, 10, 30, 60, 120, 180, 240, 300, 360, 420, 480, 540, 600, 1200, 1800, 3600, 7200,
]


def deliver_at_for(*, delay=None, deliver_at=None, delay_level=None, now=None):
    """Return the aware datetime a record is due from exactly one of delay (seconds or timedelta),
    deliver_at (aware datetime) and delay_level (1-18); raise InvalidArgument otherwise."""
    given = [name for name, value in (("delay", delay), ("deliver_at", deliver_at), ("delay_level", delay_level))
             if value is not None]
    if len(given) != 1:
        raise exceptions.InvalidArgument(reason="give exactly one of delay, deliver_at and delay_level")
    now = now or timezone.now()
    if delay_level is not None:
        if not isinstance(delay_level, int) or isinstance(delay_level, bool) or not 1 <= delay_level <= 18:
            raise exceptions.InvalidArgument(reason="delay_level is one of RocketMQ's levels, 1 to 18")
        return now + datetime.timedelta(seconds=DELAY_LEVELS[delay_level - 1])
    if delay is not None:
        given = delay  # named as given in an error, not as the timedelta made of it
        if isinstance(delay, (int, float)) and not isinstance(delay, bool):
            try:
                delay = datetime.timedelta(seconds=delay)
            except (ValueError, OverflowError):  # NaN, infinity, past what a timedelta holds
                raise exceptions.InvalidArgument(
                    reason=f"delay must be a positive number of seconds, not {delay!r}"
                ) from None
        if not isinstance(delay, datetime.timedelta) or delay.total_seconds() <= 0:
            raise exceptions.InvalidArgument(reason=f"delay must be a positive number of seconds, not {given!r}")
        deliver_at = now + delay
    if not isinstance(deliver_at, datetime.datetime) or deliver_at.tzinfo is None:
        raise exceptions.InvalidArgument(reason="deliver_at must be a timezone-aware datetime")
    if deliver_at - now > MAX_DELAY:
        raise exceptions.InvalidArgument(reason="a record can be delayed by a year at most (366 days)")
    return deliver_at


def schedule(info, record, *, partition, deliver_at):
    """Store an encoded record to enter topic `info` at deliver_at; return DelayedMetadata.

    One statement, in the caller's transaction when there is one (rolled back with it). Its NOTIFY,
    sent at commit while a mover waits, wakes a mover that is sleeping until a later record.
    """
    delayed_id = delayed_storage.schedule_record(topic_id=info.id, partition=partition, record=record,
                                                 deliver_at=deliver_at)
    return types.DelayedMetadata(topic=info.name, id=delayed_id, deliver_at=deliver_at)


def cancel(delayed_id):
    """Remove a waiting record; raise DelayedRecordNotFound if it is not waiting (moved, cancelled, unknown)."""
    if not models.DelayedRecord.objects.filter(id=delayed_id).delete()[0]:
        raise exceptions.DelayedRecordNotFound(id=delayed_id)


def reschedule(delayed_id, **when):
    """Move a waiting record's time (delay=, deliver_at= or delay_level=); return the new time."""
    deliver_at = deliver_at_for(**when)
    if not models.DelayedRecord.objects.filter(id=delayed_id).update(deliver_at=deliver_at):
        raise exceptions.DelayedRecordNotFound(id=delayed_id)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_notify(%s, %s)", [CHANNEL, deliver_at.isoformat()])
    return deliver_at


def move_due(limit=500):
    """Append up to limit due records to the log in one transaction; return how many moved.

    The records leave the waiting table in the statement that appends them, so each enters the
    log exactly once, in deliver_at order per partition.
    """
    return _move(limit)[0]


def _move(limit):
    """move_due, returning (how many moved, the time.monotonic() at which the earliest record left
    is due, its deliver_at), the last two None if none is left."""
    moved, seconds, earliest = delayed_storage.move_due(limit=limit)
    # Read now, not later: the mover would wake that much late.
    return moved, None if seconds is None else time.monotonic() + seconds, earliest


FALLBACK_SLACK_S = 0.1  # a record due this close after the fallback is not a late wake-up
# A busy mover sleeps this long or less without asking senders to notify: the ask (a round trip, then
# a look at the table) costs more than such a sleep, and a record scheduled meanwhile to be due
# sooner than the next one known is late by this much at most.
UNASKED_SLEEP_S = 0.005


def _deliver_at(payload):
    """The deliver_at a NOTIFY names; the earliest possible one if it cannot be read, so it wakes."""
    try:
        return datetime.datetime.fromisoformat(payload)
    except ValueError:
        return datetime.datetime.min.replace(tzinfo=datetime.UTC)


STRIPES = frozenset(range(64))  # the senders' wake-up keys (schedule_record in sql/delayed.sql)


class Mover(loops.Loop):
    """The loop that moves delayed records into the log when due; several may run.

    It sleeps until the earliest record is due, woken early by a NOTIFY when a sooner one is
    scheduled, and never longer than the fallback interval, so a lost notification only delays.
    Senders notify only while it sleeps (wakeups.Waiter): busy, with records due one after the
    other, it withdraws its ask, and they commit without a NOTIFY.
    """

    name = "delayed-record mover"

    def __init__(self, *, batch=500, fallback=None):
        super().__init__()
        self.batch = batch
        self.fallback = fallback if fallback is not None else max(settings.SLUICE["POLL_FALLBACK_MS"] / 1000, 0.05)
        self.listener = None
        self.moved = 0
        self.late_wakeups = 0  # sleeps the fallback ended while a record scheduled meanwhile was due
        self._slept_out = False
        self._next = (None, None)  # (time.monotonic() when the earliest record left is due, its deliver_at)
        self._waiter = wakeups.Waiter(wakeups.DELAYS, self.name)

    def run_once(self):
        """Move what is due; return True if more is due at once."""
        moved, due, earliest = _move(self.batch)
        self._next = (due, earliest)
        self.moved += moved
        if moved and self._slept_out:
            self.late_wakeups += 1
            logger.debug("late wake-up: %d delayed record(s) came due with no NOTIFY to say so", moved,
                         extra={"late_wakeups": self.late_wakeups})
        self._slept_out = False
        # The next record already due: move it now rather than after a wait that would not sleep.
        busy = moved == self.batch or (due is not None and due <= time.monotonic())
        if busy:
            self._waiter.stop(self.listener)
        return busy

    def wait(self):
        """Sleep until the next record is due (as the last move saw it), a sooner one is scheduled,
        or the fallback passes."""
        due, earliest = self._next
        seconds = None if due is None else due - time.monotonic()
        timeout = self.fallback if seconds is None else max(0.0, min(seconds, self.fallback))
        if timeout <= 0:
            return
        if timeout <= UNASKED_SLEEP_S and not self._waiter.asking:
            self.stop_event.wait(timeout)
            return
        if self.listener is None or self.listener.closed:
            try:
                self.listener = wakeups.listen_connection([CHANNEL])
            except psycopg.Error as error:
                logger.warning("LISTEN failed (%s); polling every %.2fs", error, self.fallback)
                self.stop_event.wait(timeout)
                return
            return  # a record scheduled since the last move sent its NOTIFY before we listened: look again
        ran_out = self._waiter.sleep(self.listener, STRIPES, timeout,
                                     lambda wait_s: self._sooner_scheduled(earliest, time.monotonic() + wait_s))
        # Slept the whole fallback with nothing due before it that it knew of: whatever it moves
        # now was scheduled sooner without the NOTIFY that should have woken it.
        self._slept_out = ran_out and (seconds is None or seconds > self.fallback + FALLBACK_SLACK_S)

    def _sooner_scheduled(self, earliest, deadline):
        """Wait until a NOTIFY says a record was scheduled before earliest (the waiting records'
        first deliver_at, None if none waits), or until deadline; return whether one did, or stop()
        was called (the sleep ends for it too). Records scheduled later do not wake the mover: it
        would only find them not due yet. In slices, so that stop() takes effect at once however
        long the fallback (a transport closing waits for its mover thread)."""
        while (remaining := deadline - time.monotonic()) > 0:
            if self.stop_event.is_set():
                return True
            # Taken whole (list), so that the generator lets go of the connection's lock.
            notices = list(self.listener.notifies(timeout=min(remaining, wakeups.STOP_SLICE_S), stop_after=1))
            if not notices:
                continue
            if earliest is None or any(_deliver_at(n.payload) < earliest for n in notices):
                for _ in self.listener.notifies(timeout=0):  # one look at the table answers them all
                    pass
                return True
        return False

    def close(self):
        if self.listener is not None:
            self.listener.close()
        logger.info("moved %d delayed record(s)", self.moved)
