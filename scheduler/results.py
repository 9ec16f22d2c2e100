"""Read a task's state and result from any process: a handle over its row."""
import logging
import threading
import time

import psycopg
from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils import timezone

from queueing import wakeups
from scheduler import exceptions, models, storage

logger = logging.getLogger("sluice.tasks")


def get(task_id):
    """The Result of a task by id; raise TaskNotFound."""
    try:
        return Result(models.TaskResult.objects.get(id=task_id))
    except (models.TaskResult.DoesNotExist, ValidationError, ValueError):
        raise exceptions.TaskNotFound(id=task_id) from None


def poll(done, timeout):
    """Call done() until it returns true, at most timeout seconds; return whether it did. Reads back
    off from 20 ms to half a second."""
    deadline = time.monotonic() + timeout
    pause = 0.02
    while not done():
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(pause, left))
        pause = min(pause * 2, 0.5)
    return True


class Result:
    """A task's state as last read; refresh() reads it again, wait() until it is finished."""

    def __init__(self, row):
        self._row = row

    @property
    def id(self):
        return self._row.id

    @property
    def row(self):
        return self._row

    @property
    def state(self):
        """The state; a scheduled task whose time has come reads as queued (its record is due)."""
        row = self._row
        if row.state == models.State.SCHEDULED and row.eta is not None and row.eta <= timezone.now():
            return models.State.QUEUED
        return models.State(row.state)

    @property
    def finished(self):
        return self._row.state in models.FINISHED

    @property
    def return_value(self):
        """What the task returned; raise ValueError if it has not succeeded."""
        if self._row.state != models.State.SUCCEEDED:
            raise ValueError(f"task {self.id} is {self._row.state}, it has no return value")
        return self._row.return_value

    @property
    def error(self):
        """(exception class path, message, traceback) of the last failure, or None."""
        row = self._row
        return (row.error_class, row.error_message, row.traceback) if row.error_class else None

    @property
    def progress(self):
        """(current, total, message) as the task last reported it, or None."""
        row = self._row
        if row.progress_current is None and not row.progress_message:
            return None
        return row.progress_current, row.progress_total, row.progress_message

    def abort(self):
        """Ask the task to stop: a running task sees it at its next check and ends cancelled; one
        not started yet is cancelled now. Return the Result read again (see control.abort)."""
        from scheduler import control

        self._row = control.abort(self.id).row
        return self

    def attempts(self):
        """Every run so far (TaskAttempt rows), oldest first."""
        return list(models.TaskAttempt.objects.filter(task_id=self.id).order_by("number", "id"))

    def refresh(self):
        try:
            self._row = models.TaskResult.objects.get(id=self.id)
        except models.TaskResult.DoesNotExist:
            raise exceptions.TaskNotFound(id=self.id) from None
        return self

    def wait(self, timeout):
        """Wait until the task is finished (succeeded, failed or cancelled), at most timeout seconds;
        return self, or raise ResultTimeout.

        The transaction that records the finish NOTIFYs the task's channel while someone waits (the
        wake-up protocol of queueing/wakeups.py, on a LISTEN connection of its own), so wait() returns
        at the commit; it also reads the row every SLUICE["POLL_FALLBACK_MS"], so a lost NOTIFY (or
        no LISTEN connection) only delays it.
        """
        deadline = time.monotonic() + timeout
        if self.refresh().finished:
            return self
        fallback = settings.SLUICE["POLL_FALLBACK_MS"] / 1000
        waiter = wakeups.Waiter(wakeups.FINISHES, f"result {self.id}")
        listener = _listener(storage.finish_channel(self.id))
        try:
            while not self.refresh().finished:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise exceptions.ResultTimeout(id=self.id, timeout=timeout, state=self.state)
                waiter.sleep(listener, {storage.finish_key(self.id)}, min(left, fallback),
                             lambda seconds: wakeups.heard(listener, seconds, idle=threading.Event().wait,
                                                           who=f"result {self.id}"))
        finally:
            if listener is not None:
                listener.close()  # its session's asks go with it
        return self

    def __repr__(self):
        return f"<Result {self._row.task_name}[{self.id}] {self._row.state}>"


def _listener(channel):
    """A LISTEN connection on channel, or None (wait() then polls) if one cannot be opened."""
    try:
        return wakeups.listen_connection([channel])
    except psycopg.Error as error:
        logger.warning("no LISTEN connection for a result wait (%s); polling", error)
        return None
