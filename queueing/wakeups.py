"""Wake-ups: a reader about to sleep asks writers to NOTIFY it, and sleeps until one may have
written for it (the protocol is at the top of sql/wakeups.sql)."""
import logging
import time

import psycopg
from django.db import connection

from queueing import storage

logger = logging.getLogger("sluice.wakeups")

APPENDS = 1397511936  # the lock space of the log's appends, a key per partition (mod 64)
PUBLISHES = 1397511937  # the outbox's publishers, a key per stripe
FINISHES = 1397511938  # the task layer's finished tasks, a key per task (its id mod 2^31)
DELAYS = 1397511939  # delayed sends, a key per stripe
# How long a reader queues for a key that a writer in flight holds before it looks at its other
# NOTIFYs: an append commits in well under this, a long transaction is waited out slice by slice.
PATIENCE_S = 0.005
# How long a loop's sleep on LISTEN goes without looking whether it was told to stop (the relay,
# the delayed-record mover, the kombu transport's reader): a sleep may last the whole fallback.
STOP_SLICE_S = 0.25

_LISTEN_PARAMS = ("dbname", "user", "password", "host", "port", "sslmode", "application_name", "options")


def listen_connection(channels):
    """Open an autocommit psycopg connection LISTENing on channels (its own, beside Django's)."""
    params = {k: v for k, v in connection.get_connection_params().items() if k in _LISTEN_PARAMS and v}
    conn = psycopg.connect(**params, autocommit=True)
    for channel in channels:
        conn.execute(f'LISTEN "{channel}"')
    return conn


def heard(listener, seconds, *, idle=time.sleep, who="a reader"):
    """Wait up to seconds for a NOTIFY on listener (0: take those already here); return whether one
    came. Without a usable listener, only idle(seconds). A listener that fails is closed (its
    owner opens another, or polls)."""
    if listener is None or listener.closed:
        if seconds > 0:
            idle(seconds)
        return False
    came = False
    try:
        for _ in listener.notifies(timeout=max(0.0, seconds), stop_after=1 if seconds else None):
            came = True
    except psycopg.Error as error:
        logger.warning("%s: LISTEN connection lost (%s)", who, error)
        listener.close()
    return came


def partition_keys(slots):
    """The wake-up lock keys of slots {(topic_id, partition)}: partitions 64 apart share one."""
    return frozenset((topic_id % 33554432) * 64 + partition % 64 for topic_id, partition in slots)


class Waiter:
    """Sleeps for one reader (a consumer, a share member, the outbox relay) until what it reads may
    have changed, asking writers to NOTIFY only while it sleeps.

    The reader drains its NOTIFYs with drain() before each read, reports each read with found(),
    and calls sleep() when a read found nothing. A busy reader withdraws its ask, so that writers
    commit without a NOTIFY: busy is a read that finds something when the read before it did too,
    with no sleep between. A read after a sleep keeps the asks, as the reader will most likely
    sleep again after it: a lone record then costs the reader the read that finds it and the one
    that finds nothing more, not also a withdrawal, an ask and a read after the ask (each a round
    trip); writers notify meanwhile, for that one turn.

    late_wakeups counts the sleeps that ran out (no NOTIFY, no writer seen to end) while the next
    read found something: a reader that slept past a commit, or polled for want of a LISTEN
    connection. The protocol keeps it at zero; each one is logged at debug level. A NOTIFY that has
    come by the end of that read was sent by a commit in the moment between the sleep's end and the
    read, as when a poll's own timeout ends just as a writer commits: that commit did not come
    before the sleep ended, so it is not counted (the NOTIFY still counts for the next drain()).
    """

    def __init__(self, space, reader):
        self.space = space
        self.reader = reader  # who waits, for the logs
        self.late_wakeups = 0
        self._listener = None  # the connection the asks below were made on
        self._held = set()  # keys asked
        self._pending = set()  # keys a writer that missed the ask holds
        self._slept_out = False
        self._slept = False  # sleep() was called since the last read that found something
        self._listen = None  # the listen() of the last sleep
        self._heard = False  # found() took a NOTIFY that the next drain() reports

    def sleep(self, listener, keys, seconds, listen):
        """Return once a writer of keys may have committed since the last read, or after seconds;
        return whether the sleep ran out (no NOTIFY, no writer seen to end).

        listen(seconds) waits on listener for a NOTIFY, up to seconds (0: takes what is there), and
        returns whether one came; without a usable listener it is all there is. A listener that
        fails is closed (its asks go with it) and logged.
        """
        self._slept = True
        self._listen = listen
        ran_out = self._sleep(listener, keys, seconds, listen)
        if ran_out is not None:
            self._slept_out = ran_out
        return bool(ran_out)

    def _sleep(self, listener, keys, seconds, listen):
        """sleep(), returning whether it ran out, or None when it returned for a read at once."""
        if listener is None or listener.closed:
            return not listen(seconds)  # polling: what the next read finds came unannounced
        if listener is not self._listener:
            self._listener, self._held, self._pending = listener, set(), set()
        deadline = time.monotonic() + seconds
        try:
            unasked = keys - self._held
            if unasked:
                self._pending = storage.ask_for_wakeups(listener, space=self.space, keys=unasked)
                granted = unasked - self._pending
                self._held |= granted
                if granted:
                    return None  # what was written before these asks did not notify: read once more
            while self._pending:
                # Writers that missed the ask are in flight: wait for their commits, then read once
                # more. In short slices, so that NOTIFYs on the keys already held are not held up
                # behind a long transaction.
                if time.monotonic() >= deadline:
                    return True
                if storage.wait_for_writers(listener, space=self.space, keys=self._pending, timeout=PATIENCE_S):
                    self._held |= self._pending
                    self._pending = set()
                    return None
                if listen(0):
                    return None
            return not listen(max(0.0, deadline - time.monotonic()))
        except psycopg.Error as error:
            logger.warning("%s: LISTEN connection lost (%s)", self.reader, error)
            listener.close()
            return None

    def drain(self, listen):
        """Take the NOTIFYs that came since the last sleep (listen as for sleep()), before a read;
        return whether one came."""
        heard, self._heard = self._heard, False
        if listen(0) or heard:
            self._slept_out = False  # what the read finds was notified
            return True
        return False

    def found(self, listener, count, *, new=None):
        """A read found count items: a busy reader stops asking; count a late wake-up. new: how many
        of them were written for the first time (not retries coming due), when the reader knows."""
        if self._slept_out and (count if new is None else new) and not self._notified_since():
            self.late_wakeups += 1
            logger.debug("%s: late wake-up, %d found after a sleep that no NOTIFY ended", self.reader, count,
                         extra={"reader": self.reader, "late_wakeups": self.late_wakeups})
        self._slept_out = False
        if count:
            if not self._slept:
                self.stop(listener)
            self._slept = False

    def _notified_since(self):
        """Whether a NOTIFY has come since the drain() before the read (taken now, and reported by
        the next drain()): the commit that sent it came after the sleep ran out."""
        listener = self._listener
        if self._listen is None or listener is None or listener.closed or not (self._held or self._pending):
            return False  # polling, or not asking: nothing was to notify
        self._heard = self._listen(0) or self._heard
        return self._heard

    @property
    def asking(self):
        """Whether writers are asked to notify (the reader sleeps, or did and has found nothing since)."""
        return bool(self._held or self._pending)

    def stop(self, listener):
        """Withdraw the asks: the reader is busy again, or what it reads changed."""
        if (self._held or self._pending) and listener is self._listener and not listener.closed:
            try:
                storage.stop_waiting(listener)
            except psycopg.Error as error:
                logger.warning("%s: LISTEN connection lost (%s)", self.reader, error)
                listener.close()
        self._held, self._pending = set(), set()
