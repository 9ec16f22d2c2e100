"""Read use-cases of the task layer, for commands and (later) the console and the API."""
from django.db.models import Q
from django.utils import timezone

from scheduler import models


def in_state(rows, state):
    """rows in state as a task reads (Result.state): a scheduled task whose time has come counts as
    queued, not scheduled (its record is due, whether or not it has entered the queue yet)."""
    now = timezone.now()
    if state == models.State.QUEUED:
        return rows.filter(Q(state=state) | Q(state=models.State.SCHEDULED, eta__lte=now))
    if state == models.State.SCHEDULED:
        return rows.filter(Q(eta__gt=now) | Q(eta__isnull=True), state=state)
    return rows.filter(state=state)


def task_list(*, queue=None, state=None, task_name=None, limit=50):
    """(total, newest tasks first up to limit) matching the filters."""
    rows = models.TaskResult.objects.order_by("-enqueued_at", "id")
    if queue:
        rows = rows.filter(queue=queue)
    if state:
        rows = in_state(rows, state)
    if task_name:
        rows = rows.filter(task_name=task_name)
    return rows.count(), list(rows[:limit])


def workflow_list(*, state=None, limit=50):
    """(total, newest workflows first up to limit) in that state."""
    rows = models.Workflow.objects.order_by("-created_at", "id")
    if state:
        rows = rows.filter(state=state)
    return rows.count(), list(rows[:limit])


def tasks(*, queue=None, state=None, task_name=None):
    """The tasks matching the filters, newest first (a queryset, for cursor pagination)."""
    rows = models.TaskResult.objects.order_by("-enqueued_at", "-id")
    if queue:
        rows = rows.filter(queue=queue)
    if state:
        rows = in_state(rows, state)
    if task_name:
        rows = rows.filter(task_name=task_name)
    return rows
