"""The Django peers' no-op tasks: a plain function for django-q2 (async_task takes its path) and a
django.tasks task for the django-tasks database backend."""
from django.tasks import task


def noop():
    """Nothing; django-q2 stores its result (None) in its Task table."""


@task
def noop_task():
    """Nothing; the database backend stores its result (None) in its result row."""
