"""Share groups under fire: members in separate processes, some SIGKILLed while holding records.

Checks that every record is accepted exactly once or dead-lettered (never both, never neither),
that lock expiry redelivers the records of killed members, and that the delivery limit is exact.
"""
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
from django.db import connection

from queueing import models, producer, share, topics, types
from tests.conftest import ROOT

pytestmark = [pytest.mark.acceptance, pytest.mark.django_db(transaction=True)]

AGENT = ROOT / "tests" / "acceptance" / "share_agent.py"
RECORDS = 1500
POISON_EVERY = 50
LIMIT = 3


def start(env, name, *mode):
    return subprocess.Popen(
        [sys.executable, str(AGENT), "pool", "jobs", name, *mode],
        env={**env, "SLUICE_APP_NAME": f"share-{name}", "SLUICE_POLL_FALLBACK_MS": "100"},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )


def unfinished():
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM queueing_sharedelivery")
        held = cursor.fetchone()[0]
        cursor.execute(
            "SELECT count(*) FROM queueing_sharepartition sp JOIN queueing_partition p "
            "ON p.topic_id = sp.topic_id AND p.number = sp.partition WHERE sp.acquire_offset < p.next_offset"
        )
        return held + cursor.fetchone()[0]


def test_every_record_is_accepted_exactly_once_or_dead_lettered(process_env):
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE share_effects (value text, member text, delivery int)")
    try:
        topics.create_topic("jobs", partitions=2)
        share.configure_group("pool", delivery_limit=LIMIT, lock_duration_ms=1500, backoff_base_ms=50, backoff_max_ms=200)
        values = [("poison-%d" if i % POISON_EVERY == 0 else "job-%d") % i for i in range(RECORDS)]
        producer.send_batch("jobs", [v.encode() for v in values], keys=[str(i % 7) for i in range(RECORDS)])
        # A member that hangs holding a batch, killed with SIGKILL: its locks must expire.
        stuck = start(process_env, "stuck", "hold")
        deadline = time.monotonic() + 30
        while not models.ShareDelivery.objects.filter(member_id__startswith="stuck-").exists():
            assert time.monotonic() < deadline and stuck.poll() is None, "the stuck member acquired nothing"
            time.sleep(0.1)
        held = set(models.ShareDelivery.objects.filter(member_id__startswith="stuck-").values_list("offset", "partition"))
        stuck.send_signal(signal.SIGKILL)
        stuck.wait(timeout=10)
        agents = [start(process_env, f"m{i}") for i in range(4)]
        killed = 0
        deadline = time.monotonic() + 90
        try:
            while time.monotonic() < deadline and not (models.SharePartition.objects.exists() and unfinished() == 0):
                time.sleep(0.3)
                with connection.cursor() as cursor:
                    cursor.execute("SELECT count(*) FROM share_effects")
                    done = cursor.fetchone()[0]
                if killed < 2 and done > (killed + 1) * RECORDS // 4:
                    # Kill a member while it holds records; a new one takes its place.
                    agents[killed].send_signal(signal.SIGKILL)
                    agents[killed].wait(timeout=10)
                    agents.append(start(process_env, f"r{killed}"))
                    killed += 1
            assert killed == 2
            assert unfinished() == 0, "records left unfinished"
        finally:
            for agent in agents:
                if agent.poll() is None:
                    agent.send_signal(signal.SIGTERM)
            for agent in agents:
                try:
                    agent.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    agent.kill()

        with connection.cursor() as cursor:
            cursor.execute("SELECT value FROM share_effects")
            effects = Counter(value for (value,) in cursor.fetchall())
        dlq = topics.get_topic("pool.DLQ")
        letters = list(models.Record.objects.filter(topic_id=dlq.id))
        dead = Counter(bytes(r.value).decode() for r in letters)
        expected_dead = {v for v in values if v.startswith("poison")}

        assert [v for v, n in effects.items() if n > 1] == [], "accepted more than once"
        assert set(dead) == expected_dead and all(n == 1 for n in dead.values()), "dead letters wrong"
        assert set(effects) == set(values) - expected_dead, "lost or unexpected records"
        assert all(r.headers[types.DLQ_ATTEMPTS] == str(LIMIT) for r in letters)
        # The delivery limit is exact: each poison record failed LIMIT - 1 times, then was dead-lettered.
        # (A killed member may have held it, so lock expiry can stand in for a failed attempt.)
        dead_rows = models.DeliveryAttempt.objects.filter(group_name="pool", outcome="dead_lettered")
        assert dead_rows.count() == len(expected_dead)
        assert all(row.attempt == LIMIT for row in dead_rows)
        expired = set(
            models.DeliveryAttempt.objects.filter(group_name="pool", outcome="expired").values_list("offset", "partition")
        )
        assert held <= expired, "the stuck member's records were not redelivered after their locks expired"
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TABLE IF EXISTS share_effects")
