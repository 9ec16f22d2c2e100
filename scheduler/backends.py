"""Django's tasks framework on Sluice: TASKS = {"default": {"BACKEND": "scheduler.backends.SluiceBackend"}}.

A Django task enqueued here is a Sluice task like any other (a row, a record in tasks.<queue_name>,
run by `manage.py worker --queue <queue_name>`), and its TaskResult is read from that row. The
worker's process that runs it sends task_started and task_finished (run_django_task below).
"""
import json
import logging

from django.core import checks
from django.core.exceptions import ValidationError
from django.tasks.backends.base import BaseTaskBackend
from django.tasks.base import TaskContext, TaskError, TaskResult, TaskResultStatus
from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
from django.tasks.signals import task_enqueued, task_finished, task_started
from django.utils import timezone
from django.utils.json import normalize_json

from scheduler import exceptions, models, tasks

logger = logging.getLogger("sluice.tasks")

# Django has no cancelled status. A cancelled task will never run: FAILED is Django's "unable to
# start", and a finished status, so a caller polling is_finished stops; its error says why.
STATUS = {
    models.State.QUEUED: TaskResultStatus.READY,
    models.State.SCHEDULED: TaskResultStatus.READY,
    models.State.RETRYING: TaskResultStatus.READY,
    models.State.RUNNING: TaskResultStatus.RUNNING,
    models.State.SUCCEEDED: TaskResultStatus.SUCCESSFUL,
    models.State.FAILED: TaskResultStatus.FAILED,
    models.State.CANCELLED: TaskResultStatus.FAILED,
}
CANCELLED = TaskError(exception_class_path="scheduler.exceptions.TaskCancelled",
                      traceback="scheduler.exceptions.TaskCancelled: cancelled before it started\n")


class SluiceBackend(BaseTaskBackend):
    """Deferred runs (run_after), priorities (a band of the queue each), async task functions, and
    results from any process."""

    supports_defer = True
    supports_get_result = True
    supports_async_task = True
    supports_priority = True

    def validate_task(self, task):
        """Django's checks (queue_name in QUEUES when QUEUES is set, and so on), and a queue name
        Sluice can make a topic of."""
        super().validate_task(task)
        try:
            tasks.check_queue(task.queue_name)
        except exceptions.InvalidTask as error:
            raise InvalidTask(error.data["reason"]) from None

    def check(self, **kwargs):
        errors = []
        for queue in sorted(self.queues):
            try:
                tasks.check_queue(queue)
            except exceptions.InvalidTask as error:
                errors.append(checks.Error(f"TASKS[{self.alias!r}]['QUEUES']: {error.data['reason']}",
                                           id="sluice.E101"))
        return errors

    def enqueue(self, task, args, kwargs):
        """Enqueue in the caller's transaction, like any Sluice task; return its TaskResult. Arguments
        that are not JSON raise TypeError, as in Django's own backends."""
        self.validate_task(task)
        args, kwargs = normalize_json(list(args)), normalize_json(dict(kwargs))
        definition = tasks.get(task.module_path)
        enqueuing = definition.using(queue=task.queue_name, eta=task.run_after, priority=task.priority)
        result = enqueuing.enqueue(*args, **kwargs)
        task_result = self._task_result(result.row, [], task)
        task_enqueued.send(type(self), task_result=task_result)
        return task_result

    def get_result(self, result_id):
        try:
            row = models.TaskResult.objects.get(id=result_id)
        except (models.TaskResult.DoesNotExist, ValidationError, ValueError):
            raise TaskResultDoesNotExist(result_id) from None
        attempts = list(models.TaskAttempt.objects.filter(task_id=row.id).order_by("number", "id"))
        return self._task_result(row, attempts, self._django_task(row))

    def _django_task(self, row):
        """The Django Task of a row, as enqueued (its queue; its run_after while it waits for it); a
        @scheduler.task gets one made for it."""
        try:
            definition = tasks.get(row.task_name)
        except exceptions.TaskNotRegistered:
            raise TaskResultDoesNotExist(str(row.id)) from None
        run_after = row.eta if row.state == models.State.SCHEDULED else None
        if definition.django_task is not None:
            return definition.django_task.using(queue_name=row.queue, run_after=run_after, priority=row.priority)
        # Every field named: Django 6.0's Task has no defaults for priority and run_after.
        return self.task_class(func=definition.func, priority=row.priority, backend=self.alias, queue_name=row.queue,
                               run_after=run_after, takes_context=definition.takes_context)

    def _task_result(self, row, attempts, task):
        status = STATUS[models.State(row.state)]
        result = TaskResult(
            task=task, id=str(row.id), status=status, enqueued_at=row.enqueued_at, started_at=row.started_at,
            finished_at=row.finished_at,
            last_attempted_at=attempts[-1].started_at if attempts else None,
            args=row.args, kwargs=row.kwargs, backend=self.alias, errors=_errors(row, attempts),
            worker_ids=[a.worker for a in attempts],
        )
        if status == TaskResultStatus.SUCCESSFUL:
            object.__setattr__(result, "_return_value", row.return_value)
        return result


def _errors(row, attempts):
    """One TaskError per failed attempt (its worker lost counts), oldest first; a task that failed
    without a run of its own (unknown task, too many runs lost) or was cancelled gets one more."""
    errors = [TaskError(exception_class_path=a.error_class, traceback=a.traceback or a.error_message)
              for a in attempts if a.error_class]
    if row.state == models.State.CANCELLED:
        errors.append(CANCELLED)
    elif row.state == models.State.FAILED and (not attempts or attempts[-1].outcome != models.TaskAttempt.Outcome.FAILED):
        errors.append(TaskError(exception_class_path=row.error_class, traceback=row.traceback or row.error_message))
    return errors


class Attempt:
    """One attempt of a Django task, in the worker's process that runs it, with the signals Django's
    own backends send around the call (execution.run drives it).

    task_started goes out with the task's RUNNING result, read back (this attempt's worker id is in
    worker_ids); task_finished with the result as the worker is about to record it: SUCCESSFUL with
    the return value as it reads back from JSON, or FAILED with this attempt's error appended, sent
    from inside the exception handler as Django's backends do (receivers see sys.exc_info()). A
    Django task has one attempt (no retries), so its failure is final. A task_started receiver that
    raises fails the task; a task_finished receiver's error is logged, the outcome stands.
    """

    def __init__(self, django_task, task_id):
        self.task = django_task
        backend = django_task.get_backend()
        self.sender = type(backend)
        self.result = backend.get_result(task_id)

    def call(self, args, kwargs):
        """Send task_started, then call the function (an async one runs to completion here)."""
        task_started.send(self.sender, task_result=self.result)
        context = [TaskContext(task_result=self.result)] if self.task.takes_context else []
        return self.task.call(*context, *args, **kwargs)

    def succeeded(self, value):
        result = self.result
        object.__setattr__(result, "status", TaskResultStatus.SUCCESSFUL)
        object.__setattr__(result, "finished_at", timezone.now())
        object.__setattr__(result, "_return_value", json.loads(json.dumps(value)))
        self._finished()

    def failed(self, error_class, traceback):
        """Call from inside the except block that caught the task's error."""
        result = self.result
        object.__setattr__(result, "status", TaskResultStatus.FAILED)
        object.__setattr__(result, "finished_at", timezone.now())
        result.errors.append(TaskError(exception_class_path=error_class, traceback=traceback))
        self._finished()

    def _finished(self):
        try:
            task_finished.send(self.sender, task_result=self.result)
        except Exception:  # noqa: BLE001 - the outcome stands whatever a receiver does
            logger.exception("a task_finished receiver failed for task %s", self.result.id)
