"""Tasks of the sample app, run by the task-worker tests (in child processes of a worker, or by
`manage.py worker --queue` with SLUICE_EXTRA_APPS=tests.sampleapp)."""
import os
import pathlib
import time

from django.db import connection, transaction

from outbox import inbox
from scheduler import exceptions, task


@task(queue="sample")
def add(a, b):
    return a + b


@task(queue="sample", max_attempts=3, retry_on=(ConnectionError,), backoff_base_s=0.01, backoff_max_s=0.02,
      takes_context=True)
def flaky(context, succeed_on):
    """Fail with ConnectionError until attempt number succeed_on."""
    if context.attempt < succeed_on:
        raise ConnectionError(f"attempt {context.attempt} fails")
    return context.attempt


@task(queue="sample", max_attempts=2, retry_on=(), takes_context=True)
def asks_again(context):
    """Ask for a second run with Retry, whatever retry_on says."""
    if context.attempt == 1:
        raise exceptions.Retry(countdown=0.01, reason="not yet")
    return "second run"


@task(queue="sample", max_attempts=3, retry_on=(ConnectionError,))
def broken(reason):
    raise ValueError(reason)


@task(queue="sample")
def not_json():
    return {1, 2}


@task(queue="sample", takes_context=True)
def counts_to(context, n, gate):
    """Report progress 0..n of n, waiting after the first report until the file gate exists."""
    context.progress(0, n, "starting")
    _wait_for(gate)
    for i in range(1, n + 1):
        context.progress(i, n, f"step {i}")
    return n


@task(queue="sample", soft_time_limit=0.5)
def overruns_softly():
    try:
        time.sleep(30)
    except exceptions.SoftTimeLimitExceeded:
        return "cleaned up"


@task(queue="sample", soft_time_limit=0.3, hard_time_limit=1.5)
def runaway():
    """Ignores its soft time limit: only the hard one stops it."""
    while True:
        try:
            time.sleep(60)
        except exceptions.SoftTimeLimitExceeded:
            pass


@task(queue="sample")
def rendezvous(folder, name, count):
    """Leave a file in folder, then wait until count tasks did: only tasks running at once meet."""
    path = pathlib.Path(folder)
    (path / name).touch()
    _wait_for(path, count=count)
    return sorted(p.name for p in path.iterdir())


@task(queue="sample", takes_context=True, max_attempts=3)
def slow_effect(context, seconds, tag):
    """Sleep, then write one effect row through the inbox: exactly once whatever the redeliveries."""
    started = pathlib.Path(os.environ.get("SAMPLE_TASK_DIR", "/tmp")) / f"{tag}.started"
    started.write_text(str(os.getpid()))
    time.sleep(seconds)
    with transaction.atomic():
        if inbox.remember("sample-tasks", context.task_id):
            with connection.cursor() as cursor:
                cursor.execute("INSERT INTO task_effects (tag, attempt) VALUES (%s, %s)", [tag, context.attempt])
    return tag


@task(queue="sample")
def mul(a, b):
    return a * b


@task(queue="sample")
def total(numbers):
    return sum(numbers)


@task(queue="sample")
def slow_add(value, n, seconds=0.0):
    """A workflow step that takes a while (the acceptance test kills workers meanwhile)."""
    time.sleep(seconds)
    return value + n


@task(queue="sample", takes_context=True)
def total_once(context, numbers, tag):
    """A chord callback: the sum, and one effect row through the inbox however often it runs."""
    with transaction.atomic():
        if inbox.remember("sample-tasks", context.task_id):
            with connection.cursor() as cursor:
                cursor.execute("INSERT INTO task_effects (tag, attempt) VALUES (%s, %s)", [tag, context.attempt])
    return sum(numbers)


def _wait_for(path, count=None, timeout=30):
    path = pathlib.Path(path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (count is None and path.exists()) or (count is not None and len(list(path.iterdir())) >= count):
            return
        time.sleep(0.02)
    raise TimeoutError(f"waited {timeout} s for {path}")


@task(queue="sample", takes_context=True)
def gated(context, gate):
    """Wait until the file gate exists, checking for an abort all along."""
    while not pathlib.Path(gate).exists():
        context.check_abort()
        time.sleep(0.02)
    return gate


@task(queue="sample", concurrency_key=lambda args, kwargs: args[0], concurrency_limit=1)
def one_at_a_time(key, gate):
    """At most one of these runs per key; waits until the file gate exists."""
    _wait_for(gate)
    return key


@task(queue="sample", rate_limit="2/s")
def rated(n):
    return n


@task(queue="sample", concurrency_key=lambda args, kwargs: args[0], concurrency_limit=2, takes_context=True)
def recorded_run(context, key, seconds):
    """Write when it starts and ends (committed at once, the database's clock) into acq_runs, for the
    acceptance checker; at most two run at once per key (none: no limit)."""
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO acq_runs (task_id, key, pid, started_at) VALUES (%s, %s, %s, clock_timestamp()) "
                       "RETURNING id", [context.task_id, key, os.getpid()])
        run_id = cursor.fetchone()[0]
        time.sleep(seconds)
        cursor.execute("UPDATE acq_runs SET ended_at = clock_timestamp() WHERE id = %s", [run_id])
    return key
