"""No-op tasks for bench/tasks.py, on the queue "bench": found by the workers' autodiscovery."""
import time

from scheduler import task

QUEUE = "bench"


@task(queue=QUEUE)
def noop():
    """Nothing: what is measured is the task layer's cost (its result, None, is stored)."""


@task(queue=QUEUE)
def started(enqueued_at):
    """Return when the task began, in time.time() seconds: the end of its enqueue -> start latency
    (enqueued_at, its start, is the time taken just before the enqueue)."""
    return time.time()
