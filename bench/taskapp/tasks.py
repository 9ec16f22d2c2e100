"""No-op tasks for bench/tasks.py, on the queue "bench": found by the workers' autodiscovery."""
import time

from scheduler import task

QUEUE = "bench"
LATENCY_QUEUE = "bench-latency"  # a queue of its own, so a backlog left by a slow drain is not in its way


@task(queue=QUEUE)
def noop():
    """Nothing: what is measured is the task layer's cost (its result, None, is stored)."""


@task(queue=LATENCY_QUEUE)
def started(enqueued_at):
    """Return when the task began, in time.time() seconds: the end of its enqueue -> start latency
    (enqueued_at, its start, is the time taken just before the enqueue)."""
    return time.time()


@task(queue=QUEUE, http=True)
def http_noop():
    """Nothing, submitted over the REST API by bench/api.py (a task must be marked http=True for that)."""
