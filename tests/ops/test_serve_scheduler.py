"""`manage.py serve` runs a scheduler: a schedule fires through it, and SIGTERM stops it."""
import signal
import subprocess
import sys
import time

import pytest
from django.db import connection

from scheduler import models, schedules
from tests.conftest import ROOT
from tests.schedapp import tasks as sched

pytestmark = [pytest.mark.acceptance, pytest.mark.django_db(transaction=True)]


def test_serve_fires_schedules_and_stops_its_scheduler_on_sigterm(process_env):
    with connection.cursor() as cursor:
        cursor.execute("SELECT now()")
        now = cursor.fetchone()[0]
    schedules.create(name="right-away", task=sched.beat, at=now, args=["right-away"])
    serve = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "serve", "--no-web"],
        env={**process_env, "SLUICE_EXTRA_APPS": "tests.schedapp"}, cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not models.ScheduleTick.objects.exists():
            assert time.monotonic() < deadline, "the schedule did not fire"
            time.sleep(0.1)
        serve.send_signal(signal.SIGTERM)
        stdout, stderr = serve.communicate(timeout=40)
    finally:
        serve.kill()
    assert serve.returncode == 0, stderr
    assert "started scheduler (pid" in stdout and "restart" not in stderr
    tick = models.ScheduleTick.objects.get()
    assert models.TaskResult.objects.get(id=tick.task_id).args == ["right-away"]
    assert schedules.get("nightly-report").source == "code"  # tests.schedapp's @periodic, synced at start
