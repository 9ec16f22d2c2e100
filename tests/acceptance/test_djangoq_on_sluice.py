"""django-q2 on Sluice: a real `manage.py qcluster` whose broker is Sluice's runs async_task, returns
results, runs Schedules and chains, and finishes the tasks of a cluster killed with SIGKILL."""
import datetime
import os
import signal
import subprocess
import sys
import time

import pytest
from django.db import connection
from django.utils import timezone
from django_q.brokers import get_broker
from django_q.models import Schedule
from django_q.scheduler import scheduler
from django_q.tasks import async_chain, async_task, fetch, result, result_group

from queueing import models as engine_models
from tests.conftest import ROOT

pytestmark = [pytest.mark.acceptance, pytest.mark.django_db(transaction=True)]
TASKS = "tests.djangoqapp.tasks"


@pytest.fixture
def effects():
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE djangoq_effects (tag text, pid int, at timestamptz)")
    yield
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS djangoq_effects")


@pytest.fixture
def clusters(process_env, tmp_path):
    """Start `manage.py qcluster` processes (two workers), each in a session of its own so the whole
    cluster can be killed at once; all killed at the end."""
    started = []

    def start(name, **env):
        log = tmp_path / f"{name}.log"
        cluster = subprocess.Popen([sys.executable, str(ROOT / "manage.py"), "qcluster"],
                                   env={**process_env, "SLUICE_POLL_FALLBACK_MS": "500", **env},
                                   stdout=subprocess.DEVNULL, stderr=open(log, "w"), cwd=ROOT,
                                   start_new_session=True)
        started.append(cluster)
        wait_for(lambda: "running" in log.read_text().lower() or cluster.poll() is not None)
        assert cluster.poll() is None, log.read_text()[-3000:]
        return cluster

    yield start
    for cluster in started:
        kill(cluster)


def kill(cluster):
    try:
        os.killpg(cluster.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    cluster.wait(10)


def wait_for(condition, timeout=60):
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.1)
    return found


def runs(tag):
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM djangoq_effects WHERE tag = %s", [tag])
        return cursor.fetchone()[0]


def test_async_task_results_chains_and_schedules(effects, clusters):
    clusters("cluster")
    task_id = async_task(f"{TASKS}.add", 2, 3)
    assert result(task_id, wait=60_000) == 5
    failed = async_task(f"{TASKS}.boom", "out of stock")
    wait_for(lambda: fetch(failed) is not None)
    assert fetch(failed).success is False and "out of stock" in fetch(failed).result
    group = async_chain([(f"{TASKS}.add", (1, 1)), (f"{TASKS}.add", (2, 2)), (f"{TASKS}.record", ("chained",))])
    assert sorted(map(str, result_group(group, count=3, wait=60_000))) == ["2", "4", "chained"]
    # django-q2's scheduler enqueues a due schedule's task through the broker, in the transaction
    # that moves the schedule on. The cluster's guard loop calls it every 30 s; called here, the same
    # function with the same broker does it at once, and the cluster runs the task.
    Schedule.objects.create(func=f"{TASKS}.record", args="'scheduled'", schedule_type=Schedule.ONCE,
                            next_run=timezone.now() - datetime.timedelta(seconds=1))
    scheduler(broker=get_broker())
    wait_for(lambda: runs("scheduled") == 1, timeout=90)
    assert engine_models.Topic.objects.filter(name="djangoq.sluice").exists()


def test_the_tasks_of_a_cluster_killed_with_sigkill_all_complete(effects, clusters):
    env = {"SLUICE_DJANGO_Q_RETRY_S": "4", "SLUICE_DJANGO_Q_TIMEOUT_S": "3", "SLUICE_DJANGO_Q_BULK": "1"}
    doomed = clusters("doomed", **env)
    tags = [f"killed-{n}" for n in range(4)]
    for tag in tags:
        async_task(f"{TASKS}.slow", tag, 1.5)
    wait_for(lambda: runs(f"{tags[0]}:start") or runs(f"{tags[1]}:start"))
    kill(doomed)  # mid-task: its pusher's, workers' and monitor's processes at once
    interrupted = [tag for tag in tags if runs(f"{tag}:start") and not runs(tag)]
    assert interrupted
    clusters("survivor", **env)
    for tag in tags:
        wait_for(lambda tag=tag: runs(tag) >= 1, timeout=90)
    assert all(runs(f"{tag}:start") >= 2 for tag in interrupted)  # started again, by the survivor
