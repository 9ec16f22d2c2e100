"""Task workers as real `manage.py worker --queue` processes, killed with SIGKILL and stopped with
SIGTERM: tasks are run again once their locks lapse, a long task keeps its lock while its worker
lives, runaway tasks are stopped, and effects through the inbox happen exactly once."""
import pathlib
import signal
import subprocess
import sys
import time

import pytest
from django.db import connection

from queueing import share
from scheduler import models
from tests.conftest import ROOT
from tests.sampleapp import tasks as sample

pytestmark = [pytest.mark.acceptance, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def effects():
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE task_effects (tag text, attempt int)")
    yield
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS task_effects")


@pytest.fixture
def start(process_env, tmp_path):
    """Start `manage.py worker --queue sample ARGS`; every worker is stopped at the end."""
    started = []

    def run(*args):
        log = open(tmp_path / f"worker-{len(started)}.log", "w")
        worker = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "worker", "--queue", "sample", *args],
            env={**process_env, "SLUICE_EXTRA_APPS": "tests.sampleapp", "SAMPLE_TASK_DIR": str(tmp_path),
                 "SLUICE_POLL_FALLBACK_MS": "100", "SLUICE_APP_NAME": f"sluice-worker-{len(started)}"},
            stdout=subprocess.DEVNULL, stderr=log, cwd=ROOT,
        )
        started.append(worker)
        return worker

    yield run
    for worker in started:
        if worker.poll() is None:
            worker.kill()
            worker.wait(10)


def sessions_of(worker_number):
    """How many database sessions the worker started as number worker_number still has."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                       [f"sluice-worker-{worker_number}"])
        return cursor.fetchone()[0]


def configure(lock_ms):
    share.configure_group("tasks.sample", delivery_limit=1000, lock_duration_ms=lock_ms)


def tally(tag):
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM task_effects WHERE tag = %s", [tag])
        return cursor.fetchone()[0]


def wait_for(condition, timeout=60):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def alive(pid):
    try:
        state = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def test_a_task_of_a_worker_killed_with_sigkill_runs_again_elsewhere_once(start, effects, tmp_path):
    configure(lock_ms=1500)
    result = sample.slow_effect.enqueue(2, "killed")
    first = start()
    wait_for(lambda: (tmp_path / "killed.started").exists())
    child = int((tmp_path / "killed.started").read_text())
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    wait_for(lambda: not alive(child), timeout=10)  # the task's process died with its worker
    (tmp_path / "killed.started").unlink()
    start()
    result.wait(timeout=60)
    assert (result.state, result.return_value, result.row.attempts, result.row.lost) == ("succeeded", "killed", 2, 1)
    assert [(a.number, a.outcome) for a in result.attempts()] == [(1, "lost"), (2, "succeeded")]
    assert tally("killed") == 1


def test_sigterm_lets_running_tasks_finish_within_the_grace_period_and_hands_back_the_rest(start, effects, tmp_path):
    configure(lock_ms=30_000)
    short, long = sample.slow_effect.enqueue(1.5, "short"), sample.slow_effect.enqueue(6, "long")
    worker = start("--concurrency", "2", "--grace", "3")
    wait_for(lambda: (tmp_path / "short.started").exists() and (tmp_path / "long.started").exists())
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    assert (short.refresh().state, tally("short")) == ("succeeded", 1)
    assert long.refresh().state == "queued"
    assert [a.outcome for a in long.attempts()] == ["interrupted"]
    start()  # the handed-back task does not wait for a lock to lapse
    long.wait(timeout=60)
    assert (long.state, long.row.attempts, tally("long")) == ("succeeded", 2, 1)
    assert [a.outcome for a in long.attempts()] == ["interrupted", "succeeded"]


def test_a_live_worker_keeps_the_lock_of_a_task_longer_than_the_lock_duration(start, effects):
    configure(lock_ms=1000)
    result = sample.slow_effect.enqueue(3.5, "renewed")
    start(), start()
    result.wait(timeout=60)
    assert (result.state, result.row.attempts, tally("renewed")) == ("succeeded", 1, 1)
    assert [a.outcome for a in result.attempts()] == ["succeeded"]


def test_a_runaway_task_is_killed_at_its_hard_time_limit_and_the_worker_goes_on(start, effects):
    configure(lock_ms=30_000)
    runaway, after = sample.runaway.enqueue(), sample.add.enqueue(20, 22)
    worker = start()
    after.wait(timeout=60)
    assert after.return_value == 42
    assert runaway.refresh().state == "failed"
    assert runaway.error[0] == "scheduler.exceptions.HardTimeLimitExceeded"
    assert worker.poll() is None


def test_under_fire_every_task_succeeds_once_and_its_effect_happens_once(start, effects):
    """Two workers of two processes each run 300 short tasks; one is killed with SIGKILL halfway
    and a third takes its place. No task is lost, none is recorded twice, no effect happens twice."""
    configure(lock_ms=1500)
    tags = [f"t{i}" for i in range(300)]
    results = sample.slow_effect.enqueue_many(((0.1, tag), {}) for tag in tags)
    victim = start("--concurrency", "2")
    start("--concurrency", "2")
    wait_for(lambda: sum(1 for r in results if r.refresh().finished) >= 100, timeout=120)
    running = models.TaskResult.objects.filter(state="running", worker__endswith=f"/{victim.pid}")
    wait_for(running.exists, timeout=30)  # kill it with tasks in its hands
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)
    # A statement the victim sent just before it died may still commit: read what it held only
    # once the server has ended its sessions.
    wait_for(lambda: sessions_of(0) == 0, timeout=30)
    in_flight = set(running.values_list("id", flat=True))
    start("--concurrency", "2")
    wait_for(lambda: all(r.refresh().finished for r in results), timeout=180)

    assert {r.state for r in results} == {"succeeded"}
    with connection.cursor() as cursor:
        cursor.execute("SELECT tag, count(*) FROM task_effects GROUP BY tag")
        counts = dict(cursor.fetchall())
    assert counts == {tag: 1 for tag in tags}
    rows = models.TaskResult.objects.filter(id__in=[r.id for r in results])
    assert all(row.attempts == row.lost + 1 for row in rows)  # a run again only after a lost one
    assert in_flight and all(row.lost >= 1 for row in rows if row.id in in_flight)
    assert not models.TaskAttempt.objects.filter(outcome__in=["running", "failed"]).exists()
    assert not share.models.ShareDelivery.objects.exists()
