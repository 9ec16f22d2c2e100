"""Django's tasks framework on Sluice: TASKS = {"default": {"BACKEND": "scheduler.backends.SluiceBackend"}}.

A Django task enqueued here is a Sluice task like any other (a row, a record in tasks.<queue_name>,
run by `manage.py worker --queue <queue_name>`), and its TaskResult is read from that row.
"""
from django.core.exceptions import ValidationError
from django.tasks.backends.base import BaseTaskBackend
from django.tasks.base import Task as DjangoTask
from django.tasks.base import TaskError, TaskResult, TaskResultStatus
from django.tasks.exceptions import TaskResultDoesNotExist
from django.tasks.signals import task_enqueued

from scheduler import exceptions, models, tasks

STATUS = {
    models.State.QUEUED: TaskResultStatus.READY,
    models.State.SCHEDULED: TaskResultStatus.READY,
    models.State.RETRYING: TaskResultStatus.READY,
    models.State.RUNNING: TaskResultStatus.RUNNING,
    models.State.SUCCEEDED: TaskResultStatus.SUCCESSFUL,
    models.State.FAILED: TaskResultStatus.FAILED,
    models.State.CANCELLED: TaskResultStatus.FAILED,
}


class SluiceBackend(BaseTaskBackend):
    """Deferred runs (run_after), priorities (a band of the queue each) and results from any process."""

    supports_defer = True
    supports_get_result = True
    supports_async_task = False
    supports_priority = True

    def enqueue(self, task, args, kwargs):
        """Enqueue in the caller's transaction, like any Sluice task; return its TaskResult."""
        self.validate_task(task)
        definition = tasks.get(task.module_path)
        result = definition.using(queue=task.queue_name, eta=task.run_after, priority=task.priority).enqueue(*args, **kwargs)
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
        """The Django Task of a row (a @scheduler.task gets one made for it)."""
        try:
            definition = tasks.get(row.task_name)
        except exceptions.TaskNotRegistered:
            raise TaskResultDoesNotExist(str(row.id)) from None
        if definition.django_task is not None:
            return definition.django_task
        return DjangoTask(func=definition.func, backend=self.alias, queue_name=row.queue,
                          takes_context=definition.takes_context)

    def _task_result(self, row, attempts, task):
        status = STATUS[models.State(row.state)]
        result = TaskResult(
            task=task, id=str(row.id), status=status, enqueued_at=row.enqueued_at, started_at=row.started_at,
            finished_at=row.finished_at, last_attempted_at=attempts[-1].started_at if attempts else None,
            args=row.args, kwargs=row.kwargs, backend=self.alias,
            errors=[TaskError(exception_class_path=a.error_class, traceback=a.traceback)
                    for a in attempts if a.error_class],
            worker_ids=[a.worker for a in attempts],
        )
        if status == TaskResultStatus.SUCCESSFUL:
            object.__setattr__(result, "_return_value", row.return_value)
        return result
