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
