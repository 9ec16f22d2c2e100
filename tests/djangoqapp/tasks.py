"""django-q2 task functions that leave their effects in a table (one row a run), so a test can count runs."""
import os
import time

from django.db import connection


def _effect(tag):
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO djangoq_effects (tag, pid, at) VALUES (%s, %s, clock_timestamp())",
                       [tag, os.getpid()])


def add(x, y):
    return x + y


def record(tag):
    _effect(tag)
    return tag


def slow(tag, seconds):
    _effect(f"{tag}:start")
    time.sleep(seconds)
    _effect(tag)
    return tag


def boom(message):
    raise ValueError(message)
