"""Invariants 3 and 5 in the example: a burst of paid orders, every tenth batch of payments rolled
back, while relays and consumers are killed with SIGKILL; afterwards every paid order has exactly one
coupon, one points entry and one notification, and no declined order has any."""
import signal
import subprocess
import sys
import time

import pytest
from django.db import connection
from django.db.models import Count

from outbox import models as outbox_models
from queueing import selectors, topics
from shop import models
from tests.conftest import ROOT

pytestmark = [pytest.mark.acceptance, pytest.mark.django_db(transaction=True)]

GROUPS = ("shop-coupons", "shop-points", "shop-notifications")
ORDERS = 1500


def start(env, *args):
    return subprocess.Popen([sys.executable, str(ROOT / "manage.py"), *args],
                            env={**env, "SLUICE_SESSION_TIMEOUT_MS": "2000", "SLUICE_HEARTBEAT_INTERVAL_MS": "300",
                                 "SLUICE_POLL_FALLBACK_MS": "200", "SLUICE_LOG_LEVEL": "WARNING"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def backlog():
    pending = outbox_models.OutboxEvent.objects.filter(delivered_at__isnull=True).count()
    lag = 0
    for group in GROUPS:
        try:
            rows = selectors.group_partitions(group)
        except Exception:  # the group has not joined yet
            return pending + 1
        # A partition never committed has no lag yet (as in Kafka's describe): all of it is still to
        # read (the workers start at the earliest). Counting it as 0 let the test go on, under load,
        # before a group's workers had read anything.
        lag += sum(r.log_end_offset if r.lag is None else r.lag for r in rows) + (4 - len(rows))
    return pending + lag


def test_a_burst_with_crashes_gives_every_paid_order_its_effects_once(process_env):
    if "shop.order-paid" not in {t.name for t in topics.list_topics()}:
        # Created by a migration, but an earlier transactional test may have flushed it away.
        topics.create_topic("shop.order-paid", partitions=4)
    env = process_env
    relays = [start(env, "relay"), start(env, "relay")]
    workers = {g: [start(env, "worker", "--group", g)] for g in GROUPS}
    traffic = start(env, "shop_traffic", "--orders", str(ORDERS), "--batch", "50", "--watch", "0",
                    "--fail-every", "10")
    try:
        time.sleep(1.5)
        # Crash a relay and a consumer of each group mid-burst; replacements come up.
        relays[0].send_signal(signal.SIGKILL)
        relays.append(start(env, "relay"))
        for group in GROUPS:
            workers[group][0].send_signal(signal.SIGKILL)
            workers[group].append(start(env, "worker", "--group", group))
        traffic.wait(timeout=180)
        assert traffic.returncode == 0, traffic.stderr.read()
        time.sleep(1.0)
        relays[1].send_signal(signal.SIGKILL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and backlog():
            time.sleep(0.5)
        assert backlog() == 0, "the backlog did not drain"
    finally:
        everyone = [traffic, *relays, *(w for ws in workers.values() for w in ws)]
        for process in everyone:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in everyone:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()

    paid = models.Order.objects.filter(status="paid")
    declined = ORDERS // 50 // 10 * 50  # every tenth batch of 50 was rolled back
    assert paid.count() == ORDERS - declined
    assert models.Order.objects.filter(status="created").count() == declined
    assert not models.Payment.objects.filter(order__status="created").exists()
    for relation in ("coupons", "points", "notifications"):
        counts = paid.annotate(n=Count(relation)).values_list("n", flat=True)
        assert set(counts) == {1}, f"{relation}: {sorted(set(counts))}"
        assert not models.Order.objects.filter(status="created").annotate(n=Count(relation)).filter(n__gt=0).exists()
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM outbox_outboxevent WHERE delivered_at IS NULL")
        assert cursor.fetchone()[0] == 0
    # Exactly one record per paid order reached the log, none for a declined one.
    _, partitions = topics.describe_topic("shop.order-paid")
    assert sum(p.log_end_offset for p in partitions) == ORDERS - declined
