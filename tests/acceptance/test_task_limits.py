"""Concurrency limits, unique keys and cancellation under real `manage.py worker --queue` processes,
one of them killed with SIGKILL midway. The tasks write when they run into acq_runs; a checker over
that history and the task rows shows every committed enqueue finished, nothing cancelled ran, never
more than two ran at once per key, and never two tasks with one unique key were active at once."""
import signal
import uuid

import pytest
from django.db import connection

from scheduler import control, exceptions, models
from tests.acceptance.test_task_workers import alive, configure, start, wait_for  # noqa: F401 - fixture
from tests.sampleapp import tasks as sample

pytestmark = [pytest.mark.acceptance, pytest.mark.django_db(transaction=True)]
LIMIT = 2


@pytest.fixture
def runs():
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE acq_runs (id serial, task_id uuid, key text, pid int, started_at timestamptz, "
                       "ended_at timestamptz)")
    yield
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS acq_runs")


def now():
    with connection.cursor() as cursor:
        cursor.execute("SELECT clock_timestamp()")
        return cursor.fetchone()[0]


def most_at_once(intervals):
    """The largest number of [start, end] intervals open at one time (an end before a start at a tie)."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals],
                    key=lambda e: (e[0], e[1]))
    peak = level = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    return peak


def check(rows, cancelled, killed_at):
    """The invariants over the history; returns the peak of runs at once per key."""
    assert {r.state for r in rows if r.id not in cancelled} == {"succeeded"}
    assert {r.state for r in rows if r.id in cancelled} <= {"cancelled"}
    with connection.cursor() as cursor:
        cursor.execute("SELECT task_id, key, started_at, ended_at FROM acq_runs")
        history = cursor.fetchall()
    assert not {task_id for task_id, *_ in history} & cancelled  # nothing cancelled ever started
    assert not models.TaskAttempt.objects.filter(task_id__in=cancelled).exists()
    # A run without an end was in a worker killed with SIGKILL: it ran until then at the latest.
    assert all(ended is not None or started <= killed_at for _, _, started, ended in history)
    peaks = {}
    for key in {key for _, key, *_ in history if key is not None}:
        peaks[key] = most_at_once([(s, e or killed_at) for _, k, s, e in history if k == key])
    assert all(peak <= LIMIT for peak in peaks.values()), peaks
    by_unique = {}
    for row in rows:
        if row.unique_key:
            by_unique.setdefault(row.unique_key, []).append((row.enqueued_at, row.finished_at or row.enqueued_at))
    assert all(most_at_once(spans) == 1 for spans in by_unique.values()), by_unique
    return peaks


def test_limits_and_unique_keys_hold_with_a_worker_killed_midway(start, runs, tmp_path):
    configure(lock_ms=1500)
    keyed = [sample.recorded_run.enqueue(key, 0.15) for _ in range(24) for key in ("A", "B")]
    doomed = [sample.recorded_run.enqueue("A", 0.15) for _ in range(10)]
    cancelled = {control.cancel(r.id).id for r in doomed}
    unique = [sample.recorded_run.using(unique_key=f"u{i}").enqueue(None, 0.3) for i in range(8)]
    with pytest.raises(exceptions.AlreadyEnqueued):
        sample.recorded_run.using(unique_key="u0").enqueue(None, 0.3)
    victim = start("--concurrency", "3")
    running = models.TaskResult.objects.filter(state="running", worker__endswith=f"/{victim.pid}",
                                               concurrency_key__isnull=False)
    # The victim first, until it runs two limited tasks: started together, the other workers could
    # take every limited slot whenever the victim's processes came up last (a slow machine).
    wait_for(lambda: running.count() >= 2, timeout=60)
    start("--concurrency", "3"), start("--concurrency", "2")

    # Cancel some more while the workers run: those that had not started never will.
    for result in [sample.recorded_run.enqueue("B", 0.15) for _ in range(10)]:
        try:
            cancelled.add(control.cancel(result.id).id)
        except exceptions.NotCancellable:
            keyed.append(result)
    children = []

    def victims_children():
        """The processes running the victim's tasks. A task is marked running just before its
        function starts (and writes its run), so on a busy machine the two are read again."""
        with connection.cursor() as cursor:
            cursor.execute("SELECT pid FROM acq_runs WHERE ended_at IS NULL AND task_id = ANY(%s::uuid[])",
                           [[str(i) for i in running.values_list("id", flat=True)]])
            children[:] = [pid for (pid,) in cursor.fetchall()]
        return children

    wait_for(victims_children, timeout=60)
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)
    wait_for(lambda: not any(alive(pid) for pid in children), timeout=10)  # they died with their worker
    killed_at = now()
    start("--concurrency", "3")

    # A unique key is free again once its task finished: enqueue the first ones again.
    wait_for(lambda: all(r.refresh().finished for r in unique[:4]), timeout=120)
    unique += [sample.recorded_run.using(unique_key=f"u{i}").enqueue(None, 0.1) for i in range(4)]

    everything = keyed + unique + doomed
    wait_for(lambda: not models.TaskResult.objects.filter(state__in=models.ACTIVE).exists(), timeout=240)
    rows = list(models.TaskResult.objects.all())
    assert len(rows) >= len(everything)
    peaks = check(rows, cancelled, killed_at)
    assert peaks == {"A": LIMIT, "B": LIMIT}  # the limit was reached, never passed
    assert children and len(cancelled) >= 10
    assert models.TaskResult.objects.filter(lost__gte=1).exists()  # the victim's tasks ran again
    assert not models.ConcurrencySlot.objects.exists() and not models.ConcurrencyWaiter.objects.filter(
        task__state__in=models.ACTIVE).exists()


def test_the_checker_finds_a_breach():
    """Guards the checker itself: three overlapping runs of a key, two active tasks of a unique key."""
    from datetime import datetime, timedelta, UTC

    t = datetime(2026, 1, 1, tzinfo=UTC)
    assert most_at_once([(t, t + timedelta(seconds=2)), (t + timedelta(seconds=1), t + timedelta(seconds=3)),
                         (t + timedelta(seconds=1.5), t + timedelta(seconds=4))]) == 3
    assert most_at_once([(t, t + timedelta(seconds=1)), (t + timedelta(seconds=1), t + timedelta(seconds=2))]) == 1
    with connection.cursor() as cursor:
        cursor.execute("CREATE TEMP TABLE acq_runs (task_id uuid, key text, started_at timestamptz, "
                       "ended_at timestamptz)")
        cursor.execute("INSERT INTO acq_runs VALUES (%s, 'A', %s, %s), (%s, 'A', %s, %s), (%s, 'A', %s, %s)",
                       [uuid.uuid4(), t, t + timedelta(seconds=3), uuid.uuid4(), t, t + timedelta(seconds=3),
                        uuid.uuid4(), t, None])
    try:
        with pytest.raises(AssertionError):
            check([], set(), t + timedelta(seconds=5))
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TABLE acq_runs")
