"""Outbox relay throughput (events/s from commit to destination) and the example's end-to-end latency
from payment commit to coupon (p50, p99), in one run.

Usage: DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres python bench/outbox.py [--events N]
It creates and drops its own database, sluice_bench_outbox; RabbitMQ is taken from AMQP_URL.
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


def main():
    parser = argparse.ArgumentParser(description="Outbox relay throughput and payment-to-coupon latency.")
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--orders", type=int, default=300, help="orders paid one by one for the latency")
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
    try:
        rows = [relay_rate("sluice:bench.events", args.events), relay_rate(None, max(500, args.events // 5))]
        print(f"{'relay to':<28}  {'events':>7}  {'events/s':>9}")
        for name, count, rate in rows:
            print(f"{name:<28}  {count:>7}  {rate:>9,.0f}")
        p50, p99, count = latency(url, args.orders)
        print(f"\npayment commit -> coupon, {count} orders paid one by one with relay and worker running:"
              f" p50 {p50:.0f} ms, p99 {p99:.0f} ms")
    finally:
        from django.db import connections

        connections.close_all()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")


def relay_rate(destination, count):
    """Publish count events, then time one relay delivering all of them."""
    import kombu
    from django.db import transaction

    from outbox import brokers, models, outbox, relay
    from queueing import topics

    queue = None
    if destination is None:
        name = f"bench-{uuid.uuid4().hex[:8]}"
        destination = f"amqp:{name}/order.paid"
        url = os.environ.get("AMQP_URL", brokers.AMQP_URL)
        connection = kombu.Connection(url)
        queue = kombu.Queue(name, kombu.Exchange(name, type="topic"), routing_key="#", auto_delete=False)
        queue(connection.channel()).declare()
    else:
        topics.create_topic(destination.split(":", 1)[1], partitions=4)
    models.OutboxEvent.objects.all().delete()
    with transaction.atomic():
        outbox.publish_many({"aggregate_type": "order", "aggregate_id": str(i), "event_type": "order.paid",
                             "payload": {"n": i}, "destination": destination} for i in range(count))
    from django.db import connection as db

    with db.cursor() as cursor:  # as autovacuum would after a load this size
        cursor.execute("ANALYZE outbox_outboxevent")
    loop = relay.Relay(batch=500)
    began = time.perf_counter()
    while loop.run_once():
        pass
    took = time.perf_counter() - began
    loop.publisher.close()
    if queue is not None:
        queue(connection.channel()).delete()
        queue.exchange(connection.channel()).delete()
        connection.release()
    label = "Sluice topic (exactly once)" if queue is None else "RabbitMQ, publisher confirms"
    return label, loop.delivered, loop.delivered / took


def latency(url, orders):
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
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            process.wait(timeout=30)
    coupons = {c.order_id: c.created_at for c in models.Coupon.objects.all()}
    delays = [(coupons[o.id] - o.paid_at).total_seconds() * 1000 for o in paid if o.id in coupons]
    return statistics.median(delays), statistics.quantiles(delays, n=100)[98], len(delays)


if __name__ == "__main__":
    main()
