"""Invariants 1 and 2 with real processes: concurrent producers and consumers, a consumer killed with
SIGKILL mid-batch, connections cut with pg_terminate_backend; a checker finds no anomaly."""
import signal
import subprocess
import sys
import threading
import time

import psycopg
import pytest
from django.db import connection

from queueing import topics
from tests.acceptance import checker
from tests.conftest import ROOT, database_url

pytestmark = [pytest.mark.acceptance, pytest.mark.django_db(transaction=True)]

AGENTS = ROOT / "tests" / "acceptance" / "log_agents.py"


def agent(env, *args, name):
    return subprocess.Popen(
        [sys.executable, str(AGENTS), *args],
        env={**env, "SLUICE_APP_NAME": f"agent-{name}", "SLUICE_SESSION_TIMEOUT_MS": "2000",
             "SLUICE_HEARTBEAT_INTERVAL_MS": "300", "SLUICE_POLL_FALLBACK_MS": "200", "SLUICE_LOG_LEVEL": "WARNING"},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )


def cut(application_name):
    """pg_terminate_backend every connection of one agent; return how many were cut."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = %s",
            [application_name],
        )
        return cursor.fetchone()[0]


def lines(path):
    return path.read_text().splitlines() if path.exists() else []


def stop(processes):
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def test_no_acknowledged_send_is_lost_and_partitions_stay_in_order(process_env, tmp_path):
    topics.create_topic("fault.log", partitions=4)
    done = tmp_path / "producers-done"
    producers = [agent(process_env, "produce", f"p{i}", "fault.log", "400", str(tmp_path / f"p{i}.log"), name=f"p{i}")
                 for i in range(3)]
    consumers = {f"c{i}": agent(process_env, "consume", f"c{i}", "fault.log", "checkers", str(done),
                                str(tmp_path / f"c{i}.log"), name=f"c{i}") for i in range(3)}
    try:
        # A consumer killed in the middle of its batches; a replacement joins.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(lines(tmp_path / "c0.log")) < 50:
            time.sleep(0.05)
        consumers["c0"].send_signal(signal.SIGKILL)
        consumers["c0"].wait(timeout=10)
        consumers["c3"] = agent(process_env, "consume", "c3", "fault.log", "checkers", str(done),
                                str(tmp_path / "c3.log"), name="c3")
        # Connections cut under a producer and a consumer.
        time.sleep(0.5)
        assert cut("agent-p1") >= 1
        assert cut("agent-c1") >= 1
        for producer in producers:
            producer.wait(timeout=120)
            assert producer.returncode == 0, producer.stderr.read()
        done.write_text("done")
        for name in ("c1", "c2", "c3"):
            consumers[name].wait(timeout=90)
    finally:
        stop([*producers, *consumers.values()])

    history = [line for path in sorted(tmp_path.glob("*.log")) for line in lines(path)]
    sends, reads = checker.parse(history)
    keys = {parts[1]: (parts[1].split("-")[0], parts[2]) for parts in (l.split() for l in history)
            if parts[0] == "invoke"}
    anomalies = checker.check(sends, reads, keys=keys)
    assert {name: found[:5] for name, found in anomalies.items() if found} == {}
    acknowledged = [s for s in sends if s[0] == "ok"]
    assert len(acknowledged) > 900  # most sends went through despite the cuts
    assert {r[0] for r in reads} >= {"c0", "c1", "c2", "c3"}  # the killed one had read, the others took over


def test_concurrent_appends_to_one_partition_never_commit_late(process_env, tmp_path):
    """A reader polling during concurrent appends always sees a dense prefix: no offset becomes
    visible after a higher one was seen."""
    topics.create_topic("fault.one", partitions=1)
    topic_id = topics.get_topic("fault.one").id
    producers = [agent(process_env, "produce", f"q{i}", "fault.one", "300", str(tmp_path / f"q{i}.log"), name=f"q{i}")
                 for i in range(4)]
    snapshots, problems = 0, []
    stop_reading = threading.Event()

    def read():
        nonlocal snapshots
        with psycopg.connect(database_url(), autocommit=True) as conn:
            seen = 0
            while not stop_reading.is_set():
                offsets = [r[0] for r in conn.execute(
                    'SELECT "offset" FROM queueing_record WHERE topic_id = %s AND partition = 0 ORDER BY "offset"',
                    [topic_id]).fetchall()]
                if offsets != list(range(len(offsets))):
                    problems.append(("gap", len(offsets)))
                if len(offsets) < seen:
                    problems.append(("shrank", seen, len(offsets)))
                seen = len(offsets)
                snapshots += 1

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for producer in producers:
            producer.wait(timeout=120)
            assert producer.returncode == 0, producer.stderr.read()
    finally:
        stop_reading.set()
        reader.join(timeout=30)
        stop(producers)
    assert problems == []
    assert snapshots > 10
    sends, _ = checker.parse(line for path in tmp_path.glob("*.log") for line in lines(path))
    offsets = sorted(s[3] for s in sends if s[0] == "ok")
    assert offsets == list(range(len(offsets))) and len(offsets) == 4 * 270
