"""Django tasks (django.tasks.task) of the sample app, enqueued through scheduler.backends.SluiceBackend.

With SAMPLE_SIGNAL_LOG set to a file, the task_started and task_finished signals are appended to it
as JSON lines, by whichever process sends them (a worker's child process, which runs the task).
"""
import asyncio
import json
import os
import sys

from django.dispatch import receiver
from django.tasks import task
from django.tasks.signals import task_finished, task_started


@task(queue_name="sample")
def multiply(a, b):
    return a * b


@task(queue_name="sample", takes_context=True)
def which_run(context, label):
    return {"label": label, "attempt": context.attempt, "id": context.task_result.id}


@task(queue_name="sample")
def explode():
    raise LookupError("nothing here")


@task(queue_name="sample")
def where():
    """The id of the process that runs the task."""
    return os.getpid()


@task(queue_name="sample")
async def sleep_then_echo(value):
    await asyncio.sleep(0.01)
    return {"echo": value, "ran_in_a_loop": asyncio.get_running_loop() is not None}


@task(queue_name="sample")
def shapes():
    """A return value whose JSON round trip changes its Python types (tuple to list)."""
    return {"pair": (1, 2), "nested": [{"x": 1.5}, None, True], "text": "é"}


@task(queue_name="sample")
def not_json():
    return {1, 2}


def _log(signal_name, task_result):
    path = os.environ.get("SAMPLE_SIGNAL_LOG")
    if not path:
        return
    entry = {
        "signal": signal_name, "id": task_result.id, "status": task_result.status.value,
        "attempts": task_result.attempts, "worker_ids": task_result.worker_ids,
        "errors": [e.exception_class_path for e in task_result.errors],
        "finished": task_result.finished_at is not None, "pid": os.getpid(),
        "exc_info": sys.exc_info()[0].__name__ if sys.exc_info()[0] else None,
        "return_value": task_result.return_value if task_result.status == "SUCCESSFUL" else None,
    }
    with open(path, "a") as log:
        log.write(json.dumps(entry) + "\n")


@receiver(task_started)
def log_started(sender, task_result, **kwargs):
    _log("started", task_result)


@receiver(task_finished)
def log_finished(sender, task_result, **kwargs):
    _log("finished", task_result)
