"""Two real `celery beat -S sluice` processes on one one-second schedule: one is active, the other
stands by; the active one is killed with SIGKILL, the standby takes over, and every tick from the
first to the last is sent exactly once, by one beat or the other."""
import datetime
import os
import re
import signal
import subprocess
import sys
from queue import Empty

import pytest
from kombu import Connection

from scheduler.compat.models import CeleryBeatTick
from tests.acceptance.test_celery_on_sluice import kill, wait_for
from tests.conftest import ROOT

pytestmark = [pytest.mark.acceptance, pytest.mark.django_db(transaction=True)]
APP = "tests.celeryapp.app"


@pytest.fixture
def beats(process_env, tmp_path):
    started = []

    def start(name):
        log = tmp_path / f"{name}.log"
        env = {**process_env, "DJANGO_SETTINGS_MODULE": "config.settings", "CELERY_BEAT_EVERY_S": "1",
               "SLUICE_BEAT_LEASE_S": "3"}
        beat = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", APP, "beat", "-S", "sluice", "--loglevel=INFO",
             "-s", str(tmp_path / f"{name}.schedule")],
            env=env, stdout=subprocess.DEVNULL, stderr=open(log, "w"), cwd=ROOT, start_new_session=True)
        started.append(beat)
        return beat, log

    yield start
    for beat in started:
        kill(beat)


def ticks():
    return list(CeleryBeatTick.objects.filter(periodic_task__name="every-second").order_by("tick_at"))


def sent_task_ids():
    """The ids of the every-second messages waiting in the `celery` queue (no worker runs)."""
    found = []
    with Connection("sluice://") as conn:
        queue = conn.SimpleQueue("celery")
        while True:
            try:
                message = queue.get(block=False)
            except Empty:
                break
            if message.headers.get("periodic_task_name") == "every-second" or list(message.payload[0]) == ["beat"]:
                found.append(message.headers["id"])
            message.ack()
        queue.close()
    return found


def test_a_standby_beat_takes_over_from_a_killed_one_and_no_tick_is_sent_twice_or_skipped(beats):
    first, first_log = beats("first")
    wait_for(lambda: "active: the lease is held" in first_log.read_text() or first.poll() is not None)
    assert first.poll() is None, first_log.read_text()[-3000:]
    second, second_log = beats("second")
    wait_for(lambda: "standby" in second_log.read_text() or second.poll() is not None)
    assert second.poll() is None, second_log.read_text()[-3000:]
    # The standby names itself, then the active beat that holds the lease.
    assert re.search(rf"beat: standby \(\S+:{second.pid}:\w+\): \S+:{first.pid}:\w+ holds the lease until ",
                     second_log.read_text()), second_log.read_text()[-3000:]
    wait_for(lambda: len(ticks()) >= 4)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(10)
    killed_at = len(ticks())
    wait_for(lambda: "active: the lease is held" in second_log.read_text(), timeout=30)
    wait_for(lambda: len(ticks()) >= killed_at + 6)
    os.killpg(second.pid, signal.SIGTERM)
    second.wait(30)
    sent = ticks()
    assert {tick.beat.split(":")[1] for tick in sent} == {str(first.pid), str(second.pid)}
    steps = {b.tick_at - a.tick_at for a, b in zip(sent, sent[1:])}
    assert steps == {datetime.timedelta(seconds=1)}, "a tick was skipped"
    task_ids = sent_task_ids()
    assert sorted(task_ids) == sorted(tick.task_id for tick in sent), "a tick was sent twice, or not sent"
