"""Outbox relay throughput, from commit to destination, and latency, in one run.

Usage: DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres python bench/outbox.py [--events N]
    [--broker-events N] [--latency-events N] [--orders N]
It creates and drops its own database, sluice_bench_outbox; RabbitMQ and Redis come from AMQP_URL and
REDIS_URL. Each throughput row starts its relay processes first and lets them idle; then one
transaction commits the events, and the clock runs from that commit until the last event is marked
delivered (the destination confirmed it).
"""
import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BENCH_DB = "sluice_bench_outbox"
TOPIC = "bench.events"


def main():
    parser = argparse.ArgumentParser(description="Outbox relay throughput and latency.")
    parser.add_argument("--events", type=int, default=20_000, help="events per Sluice row")
    parser.add_argument("--broker-events", type=int, default=5_000, help="events per RabbitMQ/Redis row")
    parser.add_argument("--latency-events", type=int, default=300, help="events published one by one")
    parser.add_argument("--orders", type=int, default=200, help="shop orders paid one by one (0 skips)")
    args = parser.parse_args()
    import psycopg

    admin = os.environ.get("DATABASE_URL") or sys.exit("outbox.py: set DATABASE_URL")
    url = urlunsplit(urlsplit(admin)._replace(path="/" + BENCH_DB))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {BENCH_DB}")
    os.environ.update(DATABASE_URL=url, DJANGO_SETTINGS_MODULE="config.settings", SLUICE_LOG_LEVEL="WARNING")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from queueing import topics

    topics.create_topic(TOPIC, partitions=4)
    try:
        rows = [
            throughput("Sluice topic", f"sluice:{TOPIC}", args.events, relays=1),
            throughput("Sluice topic, one aggregate", f"sluice:{TOPIC}", args.events, relays=1, aggregates=1),
            throughput("Sluice topic", f"sluice:{TOPIC}", args.events, relays=3),
            throughput("RabbitMQ, publisher confirms", "amqp", args.broker_events, relays=1),
            throughput("RabbitMQ, publisher confirms", "amqp", args.broker_events, relays=3),
            throughput("Redis", "redis", args.broker_events, relays=1),
        ]
        print(f"{'relay to':<30}  {'relays':>6}  {'events':>7}  {'events/s':>9}")
        for name, relays, count, rate in rows:
            print(f"{name:<30}  {relays:>6}  {count:>7}  {rate:>9,.0f}")
        p50, p99 = latency(args.latency_events)
        print(f"\ncommit -> appended to the topic, {args.latency_events} events published one by one, one relay"
              f" woken by NOTIFY: p50 {p50:.1f} ms, p99 {p99:.1f} ms")
        if args.orders:
            p50, p99, count = shop_latency(url, args.orders)
            print(f"payment commit -> coupon, {count} orders paid one by one with relay and worker running:"
                  f" p50 {p50:.0f} ms, p99 {p99:.0f} ms")
    finally:
        from django.db import connections

        connections.close_all()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")


def start_relays(count, batch=500):
    env = {**os.environ, "SLUICE_POLL_FALLBACK_MS": "1000"}
    manage = [sys.executable, str(ROOT / "manage.py"), "relay", "--batch", str(batch), "--prune-after", "0"]
    processes = [subprocess.Popen(manage, env=env, stderr=subprocess.DEVNULL) for _ in range(count)]
    wait_for_listeners(count)
    return processes


def wait_for_listeners(count, timeout=60):
    """Wait until count relays are idle and waiting (they hold the shared advisory locks that ask
    publishers to NOTIFY them: ask_for_wakeups in queueing/sql/wakeups.sql), so start-up is not timed."""
    from django.db import connection

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(DISTINCT pid) FROM pg_locks WHERE locktype = 'advisory' "
                           "AND classid = 1397511937 AND mode = 'ShareLock' AND database = "
                           "(SELECT oid FROM pg_database WHERE datname = current_database())")
            if cursor.fetchone()[0] >= count:
                return
        time.sleep(0.1)
    raise RuntimeError("the relays did not start")


def stop(processes):
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process in processes:
        process.wait(timeout=30)


def broker_target(kind):
    """(destination, cleanup) for a fresh exchange and queue on RabbitMQ or a list on Redis."""
    import kombu

    from outbox import destinations

    name = f"bench-{uuid.uuid4().hex[:8]}"
    connection = kombu.Connection(destinations.broker_url(kind))
    if kind == "amqp":
        queue = kombu.Queue(name, kombu.Exchange(name, type="topic"), routing_key="#", auto_delete=False)
        queue(connection.channel()).declare()

        def cleanup():
            queue(connection.channel()).delete()
            queue.exchange(connection.channel()).delete()
            connection.release()

        return f"amqp:{name}", cleanup

    def cleanup():
        with connection.SimpleQueue(name) as simple:
            simple.clear()
            simple.queue(connection.default_channel).delete()
        connection.release()

    return f"redis:{name}", cleanup


def throughput(label, destination, count, *, relays, aggregates=None):
    """Start relays, commit count events in one transaction, time until all are delivered."""
    from django.db import connection, transaction

    from outbox import models, outbox

    cleanup = None
    if destination in ("amqp", "redis"):
        destination, cleanup = broker_target(destination)
    models.OutboxEvent.objects.all().delete()
    processes = start_relays(relays)
    try:
        events = ({"aggregate_type": "order", "aggregate_id": str(i % aggregates if aggregates else i),
                   "event_type": "order.paid", "payload": {"n": i, "pad": "x" * 100}, "destination": destination}
                  for i in range(count))
        with transaction.atomic():
            outbox.publish_many(events)
            with connection.cursor() as cursor:  # as autovacuum would after a load this size
                cursor.execute("ANALYZE outbox_outboxevent")
        began = time.perf_counter()
        pending = models.OutboxEvent.objects.filter(delivered_at__isnull=True)
        deadline = began + 600
        while pending.exists() and time.perf_counter() < deadline:
            time.sleep(0.01)
        took = time.perf_counter() - began
        delivered = models.OutboxEvent.objects.filter(delivered_at__isnull=False).count()
    finally:
        stop(processes)
        if cleanup:
            cleanup()
    return label, relays, delivered, delivered / took


def latency(count):
    """Publish events one by one (about 50 a second) with one relay running; the record's append time
    (the relay's transaction time) minus the event's."""
    from django.db import transaction

    from outbox import models, outbox
    from queueing import models as queueing_models

    models.OutboxEvent.objects.all().delete()
    info = queueing_models.Topic.objects.get(name=TOPIC)
    queueing_models.Record.objects.filter(topic_id=info.id).delete()
    processes = start_relays(1)
    try:
        for i in range(count):
            with transaction.atomic():
                outbox.publish(aggregate_type="order", aggregate_id=str(i), event_type="order.paid",
                               payload={"n": i}, destination=f"sluice:{TOPIC}")
            time.sleep(0.02)
        deadline = time.monotonic() + 30
        while models.OutboxEvent.objects.filter(delivered_at__isnull=True).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop(processes)
    created = {str(e.id): e.created_at for e in models.OutboxEvent.objects.all()}
    delays = [(r.timestamp - created[r.headers["ce_id"]]).total_seconds() * 1000
              for r in queueing_models.Record.objects.filter(topic_id=info.id)]
    return statistics.median(delays), statistics.quantiles(delays, n=100)[98]


def shop_latency(url, orders):
    """Pay orders one by one at about 20 a second with a relay and a coupon worker running."""
    from shop import models, services

    env = {**os.environ, "DATABASE_URL": url, "SLUICE_POLL_FALLBACK_MS": "1000"}
    manage = [sys.executable, str(ROOT / "manage.py")]
    processes = [subprocess.Popen([*manage, "relay"], env=env, stderr=subprocess.DEVNULL),
                 subprocess.Popen([*manage, "worker", "--group", "shop-coupons"], env=env, stderr=subprocess.DEVNULL)]
    try:
        time.sleep(3)  # let the worker join its group
        paid = []
        for _ in range(orders):
            order = services.place_order("bench@example.com", 1000)
            paid.append(services.pay_order(order.id))
            time.sleep(0.05)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and models.Coupon.objects.count() < orders:
            time.sleep(0.2)
    finally:
        stop(processes)
    coupons = {c.order_id: c.created_at for c in models.Coupon.objects.all()}
    delays = [(coupons[o.id] - o.paid_at).total_seconds() * 1000 for o in paid if o.id in coupons]
    return statistics.median(delays), statistics.quantiles(delays, n=100)[98], len(delays)


if __name__ == "__main__":
    main()
