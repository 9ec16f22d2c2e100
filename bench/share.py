"""Share-group consume throughput (1, 2, 4 members, per-record accept) against the raw PostgreSQL
SKIP LOCKED dequeue of the same rows, in one run.

Usage: DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres python bench/share.py [--records N]
It creates (and drops) its own database, sluice_bench_share.
"""
import argparse
import json
import multiprocessing
import os
import statistics
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BENCH_DB = "sluice_bench_share"


def admin_url():
    url = os.environ.get("DATABASE_URL")
    if not url:
        sys.exit("share.py: set DATABASE_URL to a PostgreSQL server (the bench makes its own database there)")
    return url


def with_db(url, name):
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


def setup_django(url):
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ["SLUICE_POLL_FALLBACK_MS"] = "50"
    import django

    django.setup()


def sluice_member(url, group, topic, quota, ready, go, results):
    """One share-group member: acquire, accept each record, flush, until the shared quota is done."""
    setup_django(url)
    from queueing import share

    member = share.ShareConsumer(group, [topic], auto_offset_reset="earliest", max_records=100)
    joined = member.poll(timeout=0, max_records=1)
    for record in joined:
        member.accept(record)
    ready.wait()
    go.wait()
    done = len(joined)
    idle_since = None
    last = time.time()
    while True:
        records = member.poll(timeout=0.05)
        for record in records:
            member.accept(record)
        done += len(records)
        if records:
            idle_since = None
            last = time.time()
        else:
            # Another member may still release records; stop after a quiet spell, which is not timed.
            idle_since = idle_since or time.monotonic()
            if time.monotonic() - idle_since > 0.5:
                break
    member.flush()
    member.close()
    results.put((done, last))


def raw_member(url, quota, ready, go, results):
    """The raw limit: claim and delete 100 rows at a time with SKIP LOCKED, one statement."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        ready.wait()
        go.wait()
        done = 0
        last = time.time()
        while True:
            rows = conn.execute(
                "DELETE FROM raw_jobs WHERE id IN (SELECT id FROM raw_jobs ORDER BY id "
                "FOR UPDATE SKIP LOCKED LIMIT 100) RETURNING id, payload"
            ).fetchall()
            if not rows:
                break
            done += len(rows)
            last = time.time()
    results.put((done, last))


def timed(members, target, args_for):
    ctx = multiprocessing.get_context("spawn")
    ready, go, results = ctx.Barrier(members + 1), ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args_for(i), ready, go, results)) for i in range(members)]
    for p in procs:
        p.start()
    ready.wait()
    start = time.time()
    go.set()
    reports = [results.get(timeout=600) for _ in procs]
    total = sum(done for done, _ in reports)
    # Timed to the last record processed (each member's final quiet spell is not counted).
    elapsed = max(last for _, last in reports) - start
    for p in procs:
        p.join(timeout=60)
    return total, elapsed


def run(records, rounds=3):
    import psycopg

    admin = admin_url()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {BENCH_DB}")
    url = with_db(admin, BENCH_DB)
    try:
        setup_django(url)
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        from queueing import producer, topics

        payload = b"x" * 100
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE raw_jobs (id bigserial PRIMARY KEY, payload bytea)")
        table = []
        for members in (1, 2, 4):
            ours, theirs = [], []
            for index in range(rounds):
                topic = f"bench.share.{members}.{index}"
                topics.create_topic(topic, partitions=2)
                for start in range(0, records, 1000):
                    producer.send_batch(topic, [payload] * min(1000, records - start))
                with psycopg.connect(url, autocommit=True) as conn:
                    with conn.cursor().copy("COPY raw_jobs (payload) FROM STDIN") as copy:
                        for _ in range(records):
                            copy.write_row([payload])
                    conn.execute("VACUUM ANALYZE raw_jobs")
                sides = [
                    (ours, lambda t=topic: timed(members, sluice_member, lambda i: (url, f"g{t}", t, records))),
                    (theirs, lambda: timed(members, raw_member, lambda i: (url, records))),
                ]
                # ABBA order across rounds, so drift on a shared machine hits both sides alike.
                for results, measure in sides[::-1] if index % 2 else sides:
                    total, took = measure()
                    results.append((total, total / took))
            ratios = [a[1] / b[1] for a, b in zip(ours, theirs)]
            table.append({"members": members, "records": ours[0][0],
                          "sluice_per_s": round(statistics.median(r for _, r in ours)),
                          "raw_per_s": round(statistics.median(r for _, r in theirs)),
                          "ratio": round(statistics.median(ratios), 2)})
        return table
    finally:
        from django.db import connections

        connections.close_all()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3, help="paired rounds per figure; the median ratio is kept")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    table = run(args.records, args.repeat)
    print(f"{'members':>7}  {'records':>8}  {'sluice/s':>9}  {'raw SKIP LOCKED/s':>17}  {'ratio':>5}  goal >= 0.5")
    for row in table:
        met = "yes" if row["ratio"] >= 0.5 else "no"
        print(f"{row['members']:>7}  {row['records']:>8}  {row['sluice_per_s']:>9}  {row['raw_per_s']:>17}  "
              f"{row['ratio']:>5}  {met}")
    if args.json:
        Path(args.json).write_text(json.dumps(table, indent=2))


if __name__ == "__main__":
    main()
