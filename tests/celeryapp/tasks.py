"""Tasks that leave their effects in a table (one row a run), so a test can count runs."""
import os
import time

from django.db import connection

from tests.celeryapp.app import app


def _effect(tag):
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO celery_effects (tag, pid, at) VALUES (%s, %s, clock_timestamp())", [tag, os.getpid()])


@app.task
def record(tag):
    _effect(tag)
    return tag


@app.task
def slow(tag, seconds):
    _effect(f"{tag}:start")
    time.sleep(seconds)
    _effect(tag)
    return tag


@app.task(bind=True, max_retries=1)
def flaky(self, tag):
    """Fails its first run and retries in a second (a new message with an eta)."""
    if self.request.retries == 0:
        _effect(f"{tag}:try")
        raise self.retry(countdown=1)
    _effect(tag)
    return tag


@app.task
def add(x, y):
    return x + y


@app.task
def boom(message):
    raise ValueError(message)


@app.task(bind=True)
def progress(self, steps):
    """Reports a custom state before it ends."""
    self.update_state(state="PROGRESS", meta={"done": steps - 1, "of": steps})
    return steps


@app.task
def gather(values, tag):
    """A chord's callback: records its run, so a test can count them, and returns its header's values."""
    _effect(tag)
    return sorted(values)
