"""The task layer: tasks on the engine's topics and share groups, their results, and workers."""
from scheduler.exceptions import Retry, SoftTimeLimitExceeded  # noqa: F401


def task(function=None, **options):
    """Register a task; see scheduler.tasks.task."""
    from scheduler import tasks

    return tasks.task(function, **options)
