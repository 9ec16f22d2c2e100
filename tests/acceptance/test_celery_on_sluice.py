"""An unchanged Celery app on `broker_url = "sluice://"`: real `celery worker` processes (prefork,
concurrency 2) run `delay`, `apply_async(countdown=...)`, `apply_async(priority=...)` and
`retry(countdown=...)` tasks, answer `celery inspect ping`, send task events, lose nothing when killed
with SIGKILL, never run a long task twice while they live, and follow `task_reject_on_worker_lost`
when a pool process dies."""
import datetime
import os
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest
from django.db import connection

from queueing.models import DeliveryAttempt
from scheduler.compat.models import KombuBinding
from tests.conftest import ROOT

pytestmark = [pytest.mark.acceptance, pytest.mark.django_db(transaction=True)]
APP = "tests.celeryapp.app"


@pytest.fixture
def effects():
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE celery_effects (tag text, pid int, at timestamptz)")
    yield
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS celery_effects")


@pytest.fixture
def celery_env(process_env):
    return {**process_env, "DJANGO_SETTINGS_MODULE": "config.settings", "SLUICE_POLL_FALLBACK_MS": "500"}


@pytest.fixture
def workers(celery_env, tmp_path):
    """Start `celery worker -P prefork -c 2` processes, each in a session of its own (so the whole
    worker, pool processes included, can be killed at once); all killed at the end."""
    started = []

    def start(name, concurrency=2, **env):
        log_path = tmp_path / f"{name}.log"
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", APP, "worker", "-P", "prefork", "-c", str(concurrency), "-E",
             "-n", f"{name}@%h", "--loglevel=INFO", "--without-mingle", "--without-gossip"],
            env={**celery_env, **env}, stdout=subprocess.DEVNULL, stderr=open(log_path, "w"), cwd=ROOT,
            start_new_session=True,
        )
        started.append(worker)
        wait_for(lambda: "ready." in log_path.read_text() or worker.poll() is not None, timeout=60)
        assert worker.poll() is None, log_path.read_text()[-3000:]
        return worker

    yield start
    for worker in started:
        kill(worker)


def kill(worker):
    try:
        os.killpg(worker.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    worker.wait(10)


def wait_for(condition, timeout=60):
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.1)
    return result


def runs(tag):
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM celery_effects WHERE tag = %s", [tag])
        return cursor.fetchone()[0]


def started_by(tag):
    with connection.cursor() as cursor:
        cursor.execute("SELECT pid FROM celery_effects WHERE tag = %s", [tag])
        return [pid for (pid,) in cursor.fetchall()]


def ran_in_order(tags):
    with connection.cursor() as cursor:
        cursor.execute("SELECT tag FROM celery_effects WHERE tag = ANY(%s) ORDER BY at", [list(tags)])
        return [tag for (tag,) in cursor.fetchall()]


def ran_at(tag):
    with connection.cursor() as cursor:
        cursor.execute("SELECT min(at) FROM celery_effects WHERE tag = %s", [tag])
        return cursor.fetchone()[0]


def celery(celery_env, *args, timeout=60):
    return subprocess.run([sys.executable, "-m", "celery", "-A", APP, *args], env=celery_env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def test_a_prefork_worker_runs_delay_and_countdown_tasks_and_answers_ping(effects, workers, celery_env):
    from tests.celeryapp import tasks

    workers("w1")
    tasks.record.delay("now")
    sent = datetime.datetime.now(datetime.UTC)
    tasks.record.apply_async(("later",), countdown=2)
    tasks.flaky.delay("retried")
    wait_for(lambda: runs("now") == 1)
    wait_for(lambda: runs("later") == 1)
    assert ran_at("later") >= sent + datetime.timedelta(seconds=2)
    wait_for(lambda: runs("retried") == 1)
    assert runs("retried:try") == 1
    assert ran_at("retried") >= ran_at("retried:try") + datetime.timedelta(seconds=1)
    ping = celery(celery_env, "inspect", "ping", "--timeout", "10")
    assert ping.returncode == 0, ping.stderr
    assert "w1@" in ping.stdout and "pong" in ping.stdout
    assert runs("now") == 1 and runs("later") == 1


def test_task_events_reach_an_event_receiver(effects, workers):
    from tests.celeryapp import tasks
    from tests.celeryapp.app import app

    workers("events")
    seen = []
    with app.connection_for_read() as conn:
        def succeeded(event):
            seen.append(event)
            receiver.should_stop = True

        receiver = app.events.Receiver(conn, handlers={"task-succeeded": succeeded})
        failures = []

        def capture_one():
            try:
                receiver.capture(limit=None, timeout=60, wakeup=False)
            except BaseException as error:
                failures.append(error)
            finally:
                connection.close()  # this thread's

        capture = threading.Thread(target=capture_one, daemon=True)
        capture.start()
        # The receiver's queue is bound (in the table) once it exists; then the task may go.
        wait_for(lambda: KombuBinding.objects.filter(exchange="celeryev").exists())
        result = tasks.record.delay("evented")
        capture.join(60)
    assert failures == []
    assert [event["uuid"] for event in seen] == [result.id]


def test_celery_purge_empties_the_queue(effects, celery_env):
    from tests.celeryapp import tasks

    for n in range(3):
        tasks.record.delay(f"purged-{n}")
    purge = celery(celery_env, "purge", "-f")
    assert purge.returncode == 0, purge.stderr
    assert "Purged 3 messages" in purge.stdout
    from scheduler.compat import kombu_store

    assert kombu_store.size("celery") == 0


def test_acks_late_tasks_of_a_worker_killed_with_sigkill_all_complete(effects, workers):
    from tests.celeryapp import tasks

    env = {"CELERY_ACKS_LATE": "1", "SLUICE_KOMBU_LOCK_MS": "1500"}
    doomed = workers("doomed", **env)
    tags = [f"killed-{n}" for n in range(4)]
    for tag in tags:
        tasks.slow.delay(tag, 2)
    wait_for(lambda: runs(f"{tags[0]}:start") or runs(f"{tags[1]}:start"))
    kill(doomed)  # the whole worker: main process and pool processes, mid-task
    interrupted = [tag for tag in tags if runs(f"{tag}:start") and not runs(tag)]
    assert interrupted
    workers("survivor", **env)
    for tag in tags:
        wait_for(lambda tag=tag: runs(tag) >= 1, timeout=90)
    assert all(runs(f"{tag}:start") >= 2 for tag in interrupted)  # started again, by the survivor


def test_a_task_longer_than_the_lock_runs_once_while_its_worker_lives(effects, workers):
    from tests.celeryapp import tasks

    env = {"CELERY_ACKS_LATE": "1", "SLUICE_KOMBU_LOCK_MS": "1000"}
    workers("one", **env)
    workers("two", **env)
    tasks.slow.delay("long", 5)  # five lock durations
    wait_for(lambda: runs("long") == 1, timeout=60)
    # The other worker looked for records every half second meanwhile: a lapsed lock would have
    # been re-acquired (and recorded as expired) long before the task ended.
    assert runs("long:start") == 1
    assert not DeliveryAttempt.objects.filter(group_name="kombu.celery", outcome="expired").exists()


# The result backend (`result_backend = "sluice://"`), read and written by real workers.


def test_results_failures_and_groups_come_back_from_a_worker(effects, workers):
    from celery import group

    from tests.celeryapp import tasks

    workers("results")
    assert tasks.add.delay(2, 3).get(timeout=60) == 5
    failed = tasks.boom.delay("out of stock")
    with pytest.raises(ValueError, match="out of stock"):
        failed.get(timeout=60)
    assert failed.state == "FAILURE"
    assert 'raise ValueError(message)' in failed.traceback
    assert tasks.progress.delay(3).get(timeout=60) == 3
    assert group(tasks.add.s(n, n) for n in range(5))().get(timeout=60) == [0, 2, 4, 6, 8]


def test_a_chord_callback_runs_once_even_when_a_member_s_worker_is_killed(effects, workers):
    from celery import chord

    from tests.celeryapp import tasks

    env = {"CELERY_ACKS_LATE": "1", "SLUICE_KOMBU_LOCK_MS": "1500"}
    doomed = workers("doomed", **env)
    plain = chord(tasks.add.s(n, 1) for n in range(4))(tasks.gather.s("plain"))
    assert plain.get(timeout=60) == [1, 2, 3, 4]
    killed = chord([tasks.slow.s(f"member-{n}", 2) for n in range(4)])(tasks.gather.s("after-kill"))
    wait_for(lambda: runs("member-0:start") or runs("member-1:start"))
    kill(doomed)  # mid-member: the header's first members were running
    workers("survivor", **env)
    assert killed.get(timeout=90) == [f"member-{n}" for n in range(4)]
    assert all(runs(f"member-{n}") >= 1 for n in range(4))
    assert runs("plain") == 1 and runs("after-kill") == 1


def test_a_worker_runs_the_highest_priority_first(effects, workers):
    """apply_async(priority=N): a higher number first (RabbitMQ's meaning), FIFO within a priority."""
    from tests.celeryapp import tasks

    sent = [("low-1", None), ("mid", 5), ("low-2", 0), ("high-1", 9), ("high-2", 9), ("capped", 200)]
    for tag, priority in sent:
        tasks.record.apply_async((tag,), priority=priority)
    # One pool process taking one message at a time: the order it runs them is the order it got them.
    workers("prio", concurrency=1, CELERY_ACKS_LATE="1")
    tags = [tag for tag, _ in sent]
    wait_for(lambda: len(ran_in_order(tags)) == len(tags))
    assert ran_in_order(tags) == ["high-1", "high-2", "capped", "mid", "low-1", "low-2"]
    # A band the running worker has not seen yet (priority 3 was never sent) is found and read.
    tasks.record.apply_async(("new-band",), priority=3)
    wait_for(lambda: runs("new-band") == 1)


def _kill_the_pool_process_running(worker, tag):
    """SIGKILL the prefork pool process (not the worker's main process) that started tag."""
    wait_for(lambda: runs(f"{tag}:start") == 1)
    (pid,) = started_by(f"{tag}:start")
    assert pid in {child.pid for child in psutil.Process(worker.pid).children(recursive=True)}
    assert pid != worker.pid
    os.kill(pid, signal.SIGKILL)
    return pid


def test_reject_on_worker_lost_requeues_the_task_of_a_killed_pool_process(effects, workers):
    from tests.celeryapp import tasks

    worker = workers("lost", CELERY_ACKS_LATE="1", CELERY_REJECT_ON_WORKER_LOST="1")
    result = tasks.slow.delay("lost", 3)
    killed = _kill_the_pool_process_running(worker, "lost")
    assert result.get(timeout=60) == "lost"  # requeued at once, run again by the other pool process
    assert runs("lost:start") == 2 and runs("lost") == 1
    assert killed not in started_by("lost")
    assert worker.poll() is None  # the main process lived on
    assert not DeliveryAttempt.objects.filter(group_name="kombu.celery", outcome="expired").exists()


def test_without_reject_on_worker_lost_the_task_of_a_killed_pool_process_fails_once(effects, workers):
    from billiard.exceptions import WorkerLostError

    from scheduler.compat import kombu_store, share_queue
    from tests.celeryapp import tasks

    worker = workers("lost-once", CELERY_ACKS_LATE="1")
    result = tasks.slow.delay("lost-once", 3)
    _kill_the_pool_process_running(worker, "lost-once")
    with pytest.raises(WorkerLostError):
        result.get(timeout=60)
    assert result.state == "FAILURE"
    # Acknowledged: neither held (waiting for its lock to lapse) nor ready.
    wait_for(lambda: share_queue.held("kombu.celery") == 0)
    assert kombu_store.size("celery") == 0
    tasks.record.delay("after")  # a rerun would have been taken before it
    wait_for(lambda: runs("after") == 1)
    assert runs("lost-once:start") == 1 and runs("lost-once") == 0
