"""Operators' actions on tasks: cancel one that has not started, abort a running one, purge a queue,
run a failed one again, prune old results."""
import datetime

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models.functions import Now

from queueing import delayed, exceptions as engine_exceptions
from scheduler import exceptions, models, results, storage, tasks, workflows

FINISH_COUNTS_KEEP_S = 3600
PRUNE_BATCH = 1000
PURGE_BATCH = 1000
NOT_STARTED = (models.State.QUEUED, models.State.SCHEDULED, models.State.RETRYING)  # a cancel stops these


def cancel(task_id):
    """Cancel a queued, scheduled or retrying task: it will never start. Return its Result.

    A worker that acquires the task's record later finds it cancelled and skips it; a scheduled
    task's delayed record is removed too. Raises TaskNotFound, NotCancellable (running or finished).
    """
    with transaction.atomic():
        row = _locked(task_id)
        if row.state not in NOT_STARTED:
            raise exceptions.NotCancellable(id=task_id, state=row.state)
        cancel_locked(row)
        workflows.task_cancelled(row)  # a task of a workflow cancels the workflow
    return results.get(task_id)


def cancel_locked(row):
    """Cancel a cancellable task whose row the caller's transaction locked (FOR UPDATE)."""
    if row.delayed_id is not None:
        try:
            delayed.cancel(row.delayed_id)
        except engine_exceptions.DelayedRecordNotFound:
            pass  # already in the log: the worker skips it
    row.state, row.delayed_id = models.State.CANCELLED, None
    row.save(update_fields=["state", "delayed_id"])
    models.TaskResult.objects.filter(id=row.id).update(finished_at=Now())
    storage.finished([row.id])


def abort(task_id):
    """Ask a running task to stop (it sees the request at its next check, then ends cancelled), or
    cancel a task that has not started. Return its Result. Idempotent for a running task (the first
    request's time is kept). Raises TaskNotFound, NotAbortable (finished)."""
    with transaction.atomic():
        row = _locked(task_id)
        if row.state in NOT_STARTED:
            return cancel(task_id)
        if row.state != models.State.RUNNING:
            raise exceptions.NotAbortable(id=task_id, state=row.state)
        models.TaskResult.objects.filter(id=row.id, abort_requested_at__isnull=True).update(abort_requested_at=Now())
    return results.get(task_id)


def not_started(queue):
    """How many tasks of the queue are queued, scheduled or retrying."""
    return models.TaskResult.objects.filter(queue=queue, state__in=NOT_STARTED).count()


def purge(queue, *, batch=PURGE_BATCH):
    """Cancel every task of the queue that has not started (queued, scheduled, retrying), in
    batches of batch tasks, each its own transaction; return how many were cancelled. Tasks
    enqueued meanwhile may be cancelled too; a task a worker is starting right now is waited for
    and then left alone (it has started). As with cancel, a waiter on a purged task hears of its
    end, and the workflow of a purged task is cancelled."""
    total = 0
    while True:
        with transaction.atomic():
            cancelled = storage.purge_results(queue=queue, states=list(NOT_STARTED), limit=batch)
            for delayed_id in [d for _, d in cancelled if d is not None]:
                try:
                    delayed.cancel(delayed_id)
                except engine_exceptions.DelayedRecordNotFound:
                    pass  # already in the log: the worker skips it
            ids = [task_id for task_id, _ in cancelled]
            storage.finished(ids)
            workflows.tasks_cancelled(ids)
        total += len(cancelled)
        if not cancelled:
            return total


def retry(task_id):
    """Enqueue a failed or cancelled task again, now, with its attempts counted afresh. Return its
    Result. Raises TaskNotFound, NotRetryable, AlreadyEnqueued (its unique key is taken again)."""
    with transaction.atomic():
        row = _locked(task_id)
        if row.state not in (models.State.FAILED, models.State.CANCELLED):
            raise exceptions.NotRetryable(id=task_id, state=row.state)
        tasks.ensure_queue(row.queue, row.priority)
        # A new generation: a record of the task still in the log (a cancelled task's, not yet
        # skipped) is then skipped by the worker, so the task cannot run twice at once.
        row.generation += 1
        try:
            with transaction.atomic():
                models.TaskResult.objects.filter(id=row.id).update(
                    state=models.State.QUEUED, generation=row.generation, failures=0, lost=0, finished_at=None,
                    eta=None, abort_requested_at=None)
        except IntegrityError:
            raise exceptions.AlreadyEnqueued(unique_key=row.unique_key) from None
        tasks.send_records([row], None)
    return results.get(task_id)


def prune(*, keep_s=None, limit=PRUNE_BATCH):
    """Delete tasks and workflows finished longer ago than keep_s seconds (default
    SLUICE["TASK_RESULT_TTL_S"]), in batches of limit, each its own short transaction; return how
    many tasks went."""
    keep_s = settings.SLUICE["TASK_RESULT_TTL_S"] if keep_s is None else keep_s
    _in_batches(storage.prune_workflows, keep_s=keep_s, limit=limit)
    # The finish counts /metrics reads (its window is minutes), whatever keep_s says of results.
    models.TaskFinishCount.objects.filter(period__lt=Now() - datetime.timedelta(seconds=FINISH_COUNTS_KEEP_S)).delete()
    return _in_batches(storage.prune_results, keep_s=keep_s, limit=limit)


def _in_batches(delete, *, keep_s, limit):
    total = 0
    while True:
        with transaction.atomic():
            gone = delete(keep_s=keep_s, limit=limit)
        total += gone
        if gone < limit:
            return total


def _locked(task_id):
    try:
        return models.TaskResult.objects.select_for_update().get(id=task_id)
    except (models.TaskResult.DoesNotExist, ValidationError, ValueError):
        raise exceptions.TaskNotFound(id=task_id) from None
