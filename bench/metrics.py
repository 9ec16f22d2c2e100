"""/metrics and the admin's list pages at scale: their answer time with an empty log and with a full
one (the ratio says whether the log's size reaches them), against the goal of 300 ms.

Usage: DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres python bench/metrics.py
    [--topics 500] [--partitions 8] [--groups 200] [--records 10000000] [--scrapes 15]
It creates (and drops) its own database, sluice_bench_metrics (--database NAME), and times each
page in this process through Django's test client, so the figure is the server's work: the view,
its queries and the rendering, without a network hop.
"""
import argparse
import datetime
import json
import os
import statistics
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
GOAL_MS = 300
PAGES = ["/metrics", "/admin/queueing/topic/", "/admin/queueing/consumergroup/", "/admin/queueing/sharegroup/",
         "/admin/queueing/deliveryattempt/", "/admin/outbox/outboxevent/?delivered=no"]


def admin_url():
    url = os.environ.get("DATABASE_URL")
    if not url:
        sys.exit("metrics.py: set DATABASE_URL to a PostgreSQL server (the bench makes its own database there)")
    return url


def with_db(url, name):
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


def setup_django(url):
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("ALLOWED_HOSTS", "testserver")
    import django

    django.setup()


def build(topics_n, partitions, groups_n, history=100_000):
    """Topics, groups with committed offsets and live members, share groups, and the history
    tables: `history` delivery attempts, half as many outbox events (a tenth undelivered) and
    finished tasks."""
    from django.utils import timezone

    from outbox import models as outbox_models
    from queueing import models, topics
    from scheduler import models as task_models

    names = [f"bench.t{n:03d}" for n in range(topics_n)]
    for name in names:
        topics.create_topic(name, partitions=partitions)
    rows = {t.name: t for t in models.Topic.objects.all()}
    now = timezone.now()
    offsets, members = [], []
    for g in range(groups_n):
        group = models.ConsumerGroup.objects.create(name=f"bench.g{g:03d}", generation=1)
        for t in range(min(5, topics_n)):  # each group reads five topics
            topic = rows[names[(g * 5 + t) % topics_n]]
            offsets += [models.CommittedOffset(group=group, topic=topic, partition=p, offset=0, committed_at=now)
                        for p in range(partitions)]
        members += [models.GroupMember(id=f"bench.g{g:03d}-{m}", group=group, topics=[], session_timeout_ms=10_000,
                                       joined_at=now, last_heartbeat=now) for m in range(2)]
    models.CommittedOffset.objects.bulk_create(offsets, batch_size=5000)
    models.GroupMember.objects.bulk_create(members, batch_size=5000)
    for s in range(20):
        share = models.ShareGroup.objects.create(name=f"bench.s{s:02d}")
        models.SharePartition.objects.bulk_create(
            models.SharePartition(group=share, topic=rows[names[s % topics_n]], partition=p, start_offset=0,
                                  acquire_offset=0) for p in range(partitions))
    models.DeliveryAttempt.objects.bulk_create(
        (models.DeliveryAttempt(group_name=f"bench.g{n % groups_n:03d}", topic_name=names[n % topics_n], partition=0,
                                offset=n, attempt=1, outcome=("failed", "dead_lettered", "expired")[n % 3])
         for n in range(history)), batch_size=5000)
    outbox_models.OutboxEvent.objects.bulk_create(
        (outbox_models.OutboxEvent(aggregate_type="order", aggregate_id=str(n), event_type="paid", payload={},
                                   destination="sluice:bench.t000", delivered_at=None if n % 10 else now)
         for n in range(history // 2)), batch_size=5000)
    task_models.TaskResult.objects.bulk_create(
        (task_models.TaskResult(task_name="bench.task", queue=f"q{n % 4}", state="succeeded",
                                started_at=now - datetime.timedelta(seconds=2), finished_at=now)
         for n in range(history // 2)), batch_size=5000)
    return names


def fill_log(names, partitions, records):
    """Append records (60-byte values) spread evenly over every partition, through the producer."""
    from queueing import producer

    per_partition = max(1, records // (len(names) * partitions))
    value = b"x" * 60
    sender = producer.Producer()
    appended, started = 0, time.monotonic()
    for name in names:
        for p in range(partitions):
            left = per_partition
            while left:
                size = min(left, 5000)
                sender.send_batch(name, [value] * size, partition=p)
                left -= size
                appended += size
        if appended and names.index(name) % 50 == 49:
            print(f"  {appended:,} records appended ({appended / (time.monotonic() - started):,.0f}/s)",
                  file=sys.stderr)
    return appended


def timed_pages(scrapes, pages=PAGES, user=None):
    """Median, 95th percentile and maximum milliseconds, and queries, of each page over `scrapes`
    answers, signed in as `user` (by default a superuser, "bench")."""
    from django.contrib.auth import get_user_model
    from django.db import connection, reset_queries
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    user = user or get_user_model().objects.filter(username="bench").first() or \
        get_user_model().objects.create_superuser("bench", "bench@example.com", "bench")
    client = Client()
    client.force_login(user)
    result = {}
    for page in pages:
        client.get(page)  # warm: templates, prepared statements, caches
        times, in_db = [], []
        for _ in range(scrapes):
            reset_queries()
            started = time.perf_counter()
            with CaptureQueriesContext(connection) as captured:
                response = client.get(page)
            times.append((time.perf_counter() - started) * 1000)
            in_db.append(sum(float(q["time"]) for q in captured.captured_queries) * 1000)
            assert response.status_code == 200, (page, response.status_code)
        result[page] = {"median_ms": round(statistics.median(times), 1), "max_ms": round(max(times), 1),
                        "p95_ms": round(statistics.quantiles(times, n=20, method="inclusive")[-1], 1),
                        "db_ms": round(statistics.median(in_db), 1), "queries": len(captured),
                        "bytes": len(response.content),
                        "statements": [q["sql"] for q in captured.captured_queries]}
    return result


def log_scans(statements):
    """EXPLAIN each SELECT a page ran; the plan nodes that read the log (queueing_record or one of its
    segments), as "Node Type on relation" strings: a page that lists or sums must have none, a page
    that reads records (the message browser) only index scans of a range."""
    from django.db import connection

    def nodes(plan):
        yield plan
        for child in plan.get("Plans", ()):
            yield from nodes(child)

    found = []
    with connection.cursor() as cursor:
        for sql in statements:
            if not sql.lstrip().upper().startswith("SELECT"):
                continue
            cursor.execute("EXPLAIN (FORMAT JSON) " + sql)
            plan = cursor.fetchone()[0]
            plan = json.loads(plan) if isinstance(plan, str) else plan
            found += [f"{n['Node Type']} on {n['Relation Name']}" for n in nodes(plan[0]["Plan"])
                      if n.get("Relation Name", "").startswith("queueing_record")]
    return found


def run(args, pages=PAGES, prepare=None, inspect=None):
    """Build, time `pages` with the log empty, fill it, time them again. `prepare(names)`, if given,
    adds what those pages need after the build and returns the user to sign in as; `inspect()`, if
    given, runs on the full log and its lines are printed under the table."""
    import psycopg

    admin = admin_url()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{args.database}"')
    url = with_db(admin, args.database)
    try:
        setup_django(url)
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        started = time.monotonic()
        names = build(args.topics, args.partitions, args.groups, args.history)
        print(f"bench: {args.topics} topics x {args.partitions} partitions, {args.groups} groups built in "
              f"{time.monotonic() - started:.0f} s", file=sys.stderr)
        user = prepare(names) if prepare else None
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
        empty = timed_pages(args.scrapes, pages, user)
        started = time.monotonic()
        appended = fill_log(names, args.partitions, args.records)
        print(f"bench: {appended:,} records appended in {time.monotonic() - started:.0f} s", file=sys.stderr)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
        full = timed_pages(args.scrapes, pages, user)
        for page in pages:
            empty[page].pop("statements")
            full[page]["log_scans"] = log_scans(full[page].pop("statements"))
        inspected = inspect() if inspect else []
        return {"topics": args.topics, "partitions": args.partitions, "groups": args.groups, "records": appended,
                "scrapes": args.scrapes, "inspected": inspected,
                "pages": [{"page": page, "empty": empty[page], "full": full[page],
                           "ratio": round(full[page]["median_ms"] / max(empty[page]["median_ms"], 0.1), 2)}
                          for page in pages]}
    finally:
        from django.db import connections

        connections.close_all()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')


def arguments(description, database):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--topics", type=int, default=500)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--groups", type=int, default=200)
    parser.add_argument("--records", type=int, default=10_000_000)
    parser.add_argument("--history", type=int, default=100_000,
                        help="delivery attempts; half as many outbox events and finished tasks (default 100,000)")
    parser.add_argument("--scrapes", type=int, default=15, help="answers timed per page and state")
    parser.add_argument("--database", default=database)
    parser.add_argument("--json", help="also write the results here")
    return parser


def report(table, args, width=42):
    print(f"{table['topics']} topics x {table['partitions']} partitions, {table['groups']} groups, "
          f"{table['records']:,} records; median of {table['scrapes']} answers; goal <= {GOAL_MS} ms")
    print(f"{'page':<{width}} {'queries':>7} {'empty log ms':>12} {'full log ms':>11} {'p95 ms':>7} {'max ms':>7} "
          f"{'in SQL ms':>9} {'full/empty':>10}  goal  log read (EXPLAIN)")
    for row in table["pages"]:
        full = row["full"]
        met = "yes" if full["max_ms"] <= GOAL_MS else "no"
        print(f"{row['page']:<{width}} {full['queries']:>7} {row['empty']['median_ms']:>12} {full['median_ms']:>11} "
              f"{full['p95_ms']:>7} {full['max_ms']:>7} {full['db_ms']:>9} {row['ratio']:>10}  {met:<4}  "
              f"{_scans(full['log_scans'])}")
    for line in table.get("inspected") or ():
        print(line)
    if args.json:
        Path(args.json).write_text(json.dumps(table, indent=2))


def _scans(found):
    """"none", or how many plan nodes of each kind read the log."""
    kinds = {}
    for node in found:
        kind = node.split(" on ")[0]
        kinds[kind] = kinds.get(kind, 0) + 1
    return ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items())) or "none"


def main():
    args = arguments(__doc__.splitlines()[0], "sluice_bench_metrics").parse_args()
    report(run(args), args)


if __name__ == "__main__":
    main()
