"""The scheduler loop (`manage.py scheduler`): fire due schedule ticks; any number may run."""
import logging
import os
import select
import time

import psycopg
from django.conf import settings

from queueing import loops, wakeups
from scheduler import schedules, storage

logger = logging.getLogger("sluice.scheduler")


class Scheduler(loops.Loop):
    """Fires due ticks (schedules.fire_due), then sleeps until the next is due, at most max_sleep
    seconds, woken early by the NOTIFY a change to the schedules sends; stop() wakes it at once."""

    name = "scheduler"

    def __init__(self, *, batch=100, max_sleep=None, sync=True):
        super().__init__()
        self.batch = batch
        self.max_sleep = max_sleep if max_sleep is not None else settings.SLUICE.get("SCHEDULER_MAX_SLEEP_S", 30.0)
        self.synced = not sync
        self.listener = None
        self.fired = 0
        self.pruned_at = 0.0
        # stop() writes here, so a sleep on the LISTEN socket ends at once on SIGTERM.
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_write, False)

    def run_once(self):
        """Sync the declared schedules the first time, then fire what is due; True if more
        schedules may be due at once. (The sync is a step of the loop so that SIGTERM and a lost
        connection during it are handled as anywhere else.)"""
        if not self.synced:
            created, updated, deleted = schedules.sync()
            self.synced = True
            logger.info("declared schedules synced: %d created, %d updated, %d deleted", len(created), len(updated),
                        len(deleted), extra={"synced_created": created, "synced_updated": updated,
                                             "synced_deleted": deleted})
        fired, more = schedules.fire_due(limit=self.batch)
        self.fired += fired
        if time.monotonic() - self.pruned_at > 3600:
            self.pruned_at = time.monotonic()
            schedules.prune_ticks(keep_s=settings.SLUICE["TASK_RESULT_TTL_S"])
        return more

    def wait(self):
        """Sleep until the next tick is due, a schedule changes, stop() is called, or max_sleep passes."""
        if self.listener is None or self.listener.closed:
            try:
                self.listener = wakeups.listen_connection([schedules.CHANNEL])
            except psycopg.Error as error:
                logger.warning("LISTEN failed (%s); polling every %.1fs", error, self.max_sleep)
                self.stop_event.wait(min(self.max_sleep, 1.0))
                return
        # Asked after LISTEN: a change committed before it is in this answer, one after it NOTIFYs.
        seconds = storage.seconds_to_next_tick()
        timeout = self.max_sleep if seconds is None else max(0.0, min(seconds, self.max_sleep))
        if timeout <= 0 or self.stop_event.is_set():
            return
        try:
            ready, _, _ = select.select([self.listener.fileno(), self._wake_read], [], [], timeout)
            if self.listener.fileno() in ready:
                for _ in self.listener.notifies(timeout=0):
                    pass
        except (psycopg.Error, OSError, ValueError):
            self.listener.close()

    def stop(self):
        super().stop()
        try:
            os.write(self._wake_write, b"x")
        except OSError:
            pass

    def recover(self, error):
        """Log an unexpected error and go on after a pause: the firing rolled back whole, and is
        tried again (by this scheduler or another), so one bad schedule cannot stop the others for good."""
        logger.exception("firing schedules failed (rolled back; retrying): %s", error)
        self.stop_event.wait(1.0)
        return True

    def reconnected(self):
        if self.listener is not None:
            self.listener.close()

    def close(self):
        if self.listener is not None:
            self.listener.close()
        for fd in (self._wake_read, self._wake_write):
            try:
                os.close(fd)
            except OSError:
                pass
        logger.info("fired %d tick(s)", self.fired, extra={"fired": self.fired})
