"""Three `manage.py scheduler` processes fire the same schedules while they are killed with
SIGKILL in the middle of a tick, have their connections cut with pg_terminate_backend, and are
restarted at random: a checker then finds every tick fired, each enqueued exactly once."""
import os
import random
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
APP_NAME = "sluice-scheduler-test"


@pytest.fixture
def slow_ticks():
    """Make each tick's transaction last (a sleep in a trigger on the tick table), so that kills
    and cut connections land inside ticks, between the tick's record and its commit."""
    with connection.cursor() as cursor:
        cursor.execute("""
            CREATE FUNCTION test_slow_tick() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN PERFORM pg_sleep(0.05); RETURN NEW; END $$;
            CREATE TRIGGER test_slow_tick BEFORE INSERT ON scheduler_scheduletick
                FOR EACH ROW EXECUTE FUNCTION test_slow_tick();
        """)
    yield
    with connection.cursor() as cursor:
        cursor.execute("DROP TRIGGER IF EXISTS test_slow_tick ON scheduler_scheduletick;"
                       "DROP FUNCTION IF EXISTS test_slow_tick()")


@pytest.fixture
def start(process_env, tmp_path):
    """Start `manage.py scheduler`; every one still running is killed at the end."""
    started = []

    def run():
        log = open(tmp_path / f"scheduler-{len(started)}.log", "w")
        process = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "scheduler", "--batch", "2"],
            env={**process_env, "SLUICE_EXTRA_APPS": "tests.schedapp",
                 "SLUICE_APP_NAME": f"{APP_NAME}-{len(started)}"},
            stdout=subprocess.DEVNULL, stderr=log, cwd=ROOT,
        )
        process.log_path = tmp_path / f"scheduler-{len(started)}.log"
        process.app_name = f"{APP_NAME}-{len(started)}"
        started.append(process)
        return process

    run.started = started
    yield run
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def backends_mid_tick():
    """(backend pid, application name) of scheduler connections inside a tick's INSERT. Each
    scheduler process names its connections (SLUICE_APP_NAME), which tells whose a backend is over
    TCP and over a Unix socket (the embedded server's) alike."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pid, application_name FROM pg_stat_activity WHERE application_name LIKE %s "
                       "AND state = 'active' AND query LIKE %s",
                       [f"{APP_NAME}-%", "%INSERT INTO scheduler_scheduletick%"])
        return cursor.fetchall()


def process_named(app_name, processes):
    """The process among processes whose connections are named app_name."""
    return next((p for p in processes if p.app_name == app_name), None)


def log(process):
    return process.log_path.read_text()


def trouble(processes):
    """The lines of the schedulers' logs that tell why a tick did not fire: each one's start and stop,
    its warnings and errors ("could not fire", a lost connection) with their tracebacks."""
    lines = []
    for process in processes:
        keep = False
        for line in log(process).splitlines():
            if not line[:4].isdigit():  # a traceback's line, or a message's continuation
                if keep:
                    lines.append(f"{process.log_path.name}: {line}")
                continue
            keep = any(f" {level} " in line for level in ("WARNING", "ERROR", "CRITICAL")) or any(
                phase in line for phase in ("scheduler starting", "scheduler stopped", "synced"))
            if keep:
                lines.append(f"{process.log_path.name}: {line}")
    return "\n".join(lines[-300:]) or "(nothing in the schedulers' logs)"


def behind(names):
    """The schedules among names whose next tick is more than two seconds overdue."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT name FROM scheduler_schedule WHERE name = ANY(%s) "
                       "AND next_run_at < now() - interval '2 seconds' ORDER BY name", [names])
        return [name for name, in cursor.fetchall()]


def wait_for(condition, timeout=60):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def test_each_tick_is_enqueued_exactly_once_across_three_schedulers_killed_at_random(start, slow_ticks):
    seed = int(os.environ.get("SLUICE_TEST_SEED", random.randrange(1 << 30)))
    chance = random.Random(seed)
    names = [f"every-second-{i}" for i in range(4)]
    for name in names:
        schedules.create(name=name, task=sched.beat, every=1, args=[name], catch_up="all", catch_up_limit=1000)
    running = [start() for _ in range(3)]
    everyone = start.started
    killed_mid_tick = cut_mid_tick = restarts = 0
    # 15 s of chaos, and more (up to a minute) until a kill and a cut both landed inside a tick: on
    # a busy machine the schedulers spend longer starting, with no tick to land in.
    deadline, last_chance = time.monotonic() + 15, time.monotonic() + 60
    while time.monotonic() < deadline or (not (killed_mid_tick and cut_mid_tick) and time.monotonic() < last_chance):
        time.sleep(chance.uniform(0.1, 0.6))
        action = chance.choice(["kill-mid-tick", "cut-mid-tick", "kill-any"])
        if action == "kill-any":
            victim = chance.choice(running)
        else:
            try:
                wait_for(backends_mid_tick, timeout=5)
            except AssertionError:
                continue
            mid = backends_mid_tick()
            if not mid:
                continue
            pid, app_name = chance.choice(mid)
            if action == "cut-mid-tick":
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
                    cut_mid_tick += cursor.fetchone()[0]
                continue
            victim = process_named(app_name, running)
            if victim is None:
                continue
            killed_mid_tick += 1
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        running[running.index(victim)] = start()
        restarts += 1
    time.sleep(3)  # all three run undisturbed for a while: they catch up
    # A process still starting (Django's set-up, on a busy machine) has no SIGTERM handler yet.
    wait_for(lambda: all("scheduler starting" in log(process) for process in running))
    # On a busy machine the three may all have been replaced in the last seconds and be starting
    # still: SIGTERM then would stop them before a schedule they never got to has fired at all.
    waited, deadline = time.monotonic(), time.monotonic() + 30
    if late := behind(names):
        fired = {name: models.ScheduleTick.objects.filter(schedule__name=name).count() for name in late}
        print(f"seed {seed}: all started, still behind (ticks so far): {fired}")
    while overdue := behind(names):
        assert time.monotonic() < deadline, f"seed {seed}: {overdue} still behind; logs:\n{trouble(everyone)}"
        time.sleep(0.1)
    if late:
        print(f"seed {seed}: caught up {time.monotonic() - waited:.1f}s later")
    for process in running:
        process.send_signal(signal.SIGTERM)
    for process in running:
        assert process.wait(30) == 0
    print(f"seed {seed}: {restarts} restarts, {killed_mid_tick} killed mid-tick, {cut_mid_tick} cut mid-tick")
    assert killed_mid_tick >= 1 and cut_mid_tick >= 1, f"seed {seed}: no kill landed inside a tick"

    # The checker: per schedule, every second from the first tick to the last was fired once, and
    # each fired tick enqueued exactly one task; no task was enqueued without its tick.
    for name in names:
        row = schedules.get(name)
        ticks = list(row.ticks.order_by("tick_at"))
        assert len(ticks) >= 10, (f"seed {seed}: {name} fired {len(ticks)} tick(s), next at {row.next_run_at}; "
                                  f"logs:\n{trouble(everyone)}")
        expected = [ticks[0].tick_at + i * row.interval for i in range(len(ticks))]
        assert [t.tick_at for t in ticks] == expected, (f"seed {seed}: {name} has a gap or a duplicate; "
                                                        f"logs:\n{trouble(everyone)}")
        assert all(t.task_id is not None and not t.error for t in ticks)
        enqueued = models.TaskResult.objects.filter(task_name=sched.beat.name, args=[name])
        assert sorted(str(i) for i in enqueued.values_list("id", flat=True)) == sorted(str(t.task_id) for t in ticks)
        assert row.next_run_at > ticks[-1].tick_at and row.last_tick_at == ticks[-1].tick_at
