"""Sluice against the raw PostgreSQL limit for the same rows, side by side in one run, one table.

Usage: DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres python bench/run.py [--records N]
(`make bench` does this). It creates and drops its own database, sluice_bench. Figures are ratios
of rates measured moments apart on the same server, so a noisy machine moves both sides.
"""
import argparse
import contextlib
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BENCH_DB = "sluice_bench"
VALUE = b"v" * 100
BATCH = 500

RAW_TABLE = """
CREATE TABLE raw_record (
    topic_id bigint NOT NULL, partition int NOT NULL, "offset" bigint NOT NULL, key bytea, value bytea,
    value_format smallint NOT NULL, headers jsonb, timestamp timestamptz NOT NULL,
    producer_id bigint, sequence int,
    PRIMARY KEY (topic_id, partition, "offset"))
"""


def database_urls():
    admin = os.environ.get("DATABASE_URL")
    if not admin:
        sys.exit("bench: set DATABASE_URL to a PostgreSQL server (the bench makes its own database there)")
    return admin, urlunsplit(urlsplit(admin)._replace(path="/" + BENCH_DB))


def rate(count, seconds):
    return count / seconds if seconds > 0 else float("inf")


def paired(rounds, measure, baseline):
    """Run measure() and baseline() (each -> records per second) side by side, rounds times, in
    ABBA order so that drift on a shared machine hits both alike; return the median rates and the
    median of the per-round ratios (each ratio compares runs made moments apart)."""
    ours, theirs = [], []
    for index in range(rounds):
        if index % 2:
            theirs.append(baseline())
            ours.append(measure())
        else:
            ours.append(measure())
            theirs.append(baseline())
    ratios = [a / b for a, b in zip(ours, theirs)]
    return statistics.median(ours), statistics.median(theirs), statistics.median(ratios)


class Raw:
    """The raw PostgreSQL limit: psycopg on a table shaped like the log, no engine in between."""

    def __init__(self, url):
        import psycopg

        self.conn = psycopg.connect(url, autocommit=True)
        self.conn.execute("DROP TABLE IF EXISTS raw_record")
        self.conn.execute(RAW_TABLE)
        self.next = 0

    def _rows(self, count):
        start, self.next = self.next, self.next + count
        return [(1, 0, start + i, None, VALUE, 0, None) for i in range(count)]

    def copy(self, count, batch=BATCH):
        """COPY in transactions of `batch` rows: what a producer of batches of that size can reach."""
        rows = self._rows(count)
        now = datetime.datetime.now(datetime.UTC)
        began = time.perf_counter()
        for start in range(0, count, batch):
            with self.conn.transaction():
                with self.conn.cursor().copy(
                    'COPY raw_record (topic_id, partition, "offset", key, value, value_format, headers, timestamp) '
                    "FROM STDIN (FORMAT BINARY)"
                ) as copy:
                    copy.set_types(["int8", "int4", "int8", "bytea", "bytea", "int2", "jsonb", "timestamptz"])
                    for row in rows[start:start + batch]:
                        copy.write_row((*row, now))
        return rate(count, time.perf_counter() - began)

    def copy_all(self, count):
        """One COPY of everything in one transaction: the ceiling, for reference."""
        return self.copy(count, batch=count)

    def batched_insert(self, count):
        rows = self._rows(count)
        began = time.perf_counter()
        for start in range(0, count, BATCH):
            chunk = rows[start:start + BATCH]
            self.conn.execute(
                'INSERT INTO raw_record (topic_id, partition, "offset", value, value_format, timestamp) '
                "SELECT 1, 0, o, v, 0, now() FROM unnest(%s::bigint[], %s::bytea[]) AS t(o, v)",
                [[r[2] for r in chunk], [r[4] for r in chunk]],
            )
        return rate(count, time.perf_counter() - began)

    def single_insert(self, count, explicit=False):
        """One INSERT a transaction: autocommit (one round trip), or with explicit=True inside BEGIN and
        COMMIT of its own (three), as an insert in a Django transaction.atomic() block."""
        rows = self._rows(count)
        # One cursor for the run, as the producer keeps one per connection: connection.execute() would
        # build a cursor per INSERT, some 15 µs that are the client's, not PostgreSQL's.
        cursor = self.conn.cursor()
        began = time.perf_counter()
        for row in rows:  # each INSERT is its own transaction, flushed to WAL at commit
            with self.conn.transaction() if explicit else contextlib.nullcontext():
                cursor.execute(
                    'INSERT INTO raw_record (topic_id, partition, "offset", value, value_format, timestamp) '
                    "VALUES (1, 0, %s, %s, 0, now())",
                    [row[2], row[4]],
                )
        return rate(count, time.perf_counter() - began)

    def range_read(self, count):
        began = time.perf_counter()
        position, read = 0, 0
        cursor = self.conn.cursor()
        while read < count:
            rows = cursor.execute(
                'SELECT topic_id, partition, "offset", key, value, value_format, headers, timestamp '
                'FROM raw_record WHERE topic_id = 1 AND partition = 0 AND "offset" >= %s '
                'ORDER BY "offset" LIMIT %s',
                [position, BATCH], binary=True,
            ).fetchall()
            if not rows:
                break
            read += len(rows)
            position = rows[-1][2] + 1
        return rate(read, time.perf_counter() - began)


class Engine:
    """The same work through Sluice's Python API."""

    def __init__(self):
        from queueing import topics

        self.topics = topics
        self.round = 0

    def _topic(self, partitions=1):
        self.round += 1
        name = f"bench.{self.round}"
        self.topics.create_topic(name, partitions=partitions)
        return name

    def send_batch(self, count):
        from queueing import producer

        topic = self._topic()
        began = time.perf_counter()
        for start in range(0, count, BATCH):
            producer.send_batch(topic, [VALUE] * min(BATCH, count - start), partition=0)
        self.last_topic = topic
        return rate(count, time.perf_counter() - began)

    def single_send(self, count):
        from queueing import producer

        topic = self._topic()
        began = time.perf_counter()
        for _ in range(count):
            producer.send(topic, VALUE, partition=0, acks="all")
        return rate(count, time.perf_counter() - began)

    def ordered_consume(self, count, commit="commit_async"):
        """Poll 500 at a time and commit after every poll, as the worker does: commit_async, stored by
        the next poll's fetch in its round trip (commit="commit": a round trip of its own)."""
        from queueing import consumer, producer

        topic = self._topic()
        for start in range(0, count, BATCH):
            producer.send_batch(topic, [VALUE] * min(BATCH, count - start), partition=0)
        member = consumer.Consumer(f"group.{topic}", [topic], auto_offset_reset="earliest",
                                   enable_auto_commit=False, max_poll_records=BATCH)
        member.poll(timeout=0, max_records=1)  # join before the clock starts
        member.seek(member.assigned()[0], 0)
        began = time.perf_counter()
        read = 0
        while read < count:
            records = member.poll(timeout=1.0)
            if not records:
                break
            read += len(records)
            getattr(member, commit)()
        seconds = time.perf_counter() - began
        member.close(commit=False)
        return rate(read, seconds)

    def ordered_consume_sync(self, count):
        return self.ordered_consume(count, commit="commit")


def _sending_process(url, topic, partition, count, ready, go, results):
    """One of the concurrent producers: single sends, acks=all, to a partition of its own."""
    import share

    share.setup_django(url)
    from queueing import producer

    producer.send(topic, VALUE, partition=partition)  # connected and prepared before the clock starts
    ready.wait()
    go.wait()
    for _ in range(count):
        producer.send(topic, VALUE, partition=partition, acks="all")
    results.put((count, time.time()))


def _inserting_process(url, topic_id, partition, count, ready, go, results):
    """Its raw counterpart: INSERT + COMMIT of the same rows, one cursor, a partition of its own."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.cursor()
        insert = ('INSERT INTO raw_record (topic_id, partition, "offset", value, value_format, timestamp) '
                  "VALUES (%s, %s, %s, %s, 0, now())")
        cursor.execute(insert, [topic_id, partition, -1, VALUE])
        ready.wait()
        go.wait()
        for offset in range(count):
            cursor.execute(insert, [topic_id, partition, offset, VALUE])
    results.put((count, time.time()))


def concurrent_sends(engine, url, processes, count, repeat):
    """Single sends from several processes at once against as many raw INSERT loops; one row."""
    import share

    ours, theirs = [], []
    for index in range(repeat):
        topic = engine._topic(partitions=processes)
        sides = [
            (ours, lambda: share.timed(processes, _sending_process, lambda i: (url, topic, i, count))),
            (theirs, lambda: share.timed(processes, _inserting_process, lambda i: (url, 1000 + index, i, count))),
        ]
        for results, measure in sides[::-1] if index % 2 else sides:  # ABBA, as paired() does
            total, took = measure()
            results.append(rate(total, took))
    return {"operation": f"produce, single send acks=all, {processes} processes", "records": processes * count,
            "sluice_per_s": round(statistics.median(ours)), "baseline": f"INSERT + COMMIT, {processes} processes",
            "raw_per_s": round(statistics.median(theirs)),
            "ratio": round(statistics.median(a / b for a, b in zip(ours, theirs)), 2), "goal": None}


def delayed_pending(engine, url, records, repeat, pending):
    """Produce and consume rates with `pending` delayed records waiting, against none waiting: each
    round measures both states, switching between them by loading and truncating the records."""
    import psycopg

    if not pending:
        return []
    measures = [("produce, send_batch of 500", engine.send_batch, records),
                ("ordered consume + commit per poll", engine.ordered_consume, records)]

    def measure_all():
        return {name: measure(count) for name, measure, count in measures}

    def load():
        with psycopg.connect(url, autocommit=True) as conn:
            topic_id = conn.execute("SELECT id FROM queueing_topic ORDER BY id LIMIT 1").fetchone()[0]
            began = time.perf_counter()
            conn.execute(
                "INSERT INTO queueing_delayedrecord (topic_id, partition, value, value_format, deliver_at, "
                "created_at) SELECT %s, 0, '\\x00'::bytea, 0, now() + (1 + n %% 86400) * interval '1 second', "
                "now() FROM generate_series(1, %s) AS n", [topic_id, pending])
            stored = time.perf_counter() - began
            # Settle the bulk load (its checkpoint and autovacuum) so that what is measured is a
            # steady state with the records waiting, not the aftermath of loading them.
            conn.execute("VACUUM ANALYZE queueing_delayedrecord")
            conn.execute("CHECKPOINT")
        print(f"({pending:,} delayed records stored in {stored:.1f}s)")

    def unload():
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("TRUNCATE queueing_delayedrecord")
            conn.execute("CHECKPOINT")

    waiting, none = [], []
    for index in range(repeat):
        if index % 2:
            waiting.append(measure_all())
            unload()
            none.append(measure_all())
        else:
            none.append(measure_all())
            load()
            waiting.append(measure_all())
    if repeat % 2:
        unload()
    rows = []
    for name, _, count in measures:
        ratios = [w[name] / n[name] for w, n in zip(waiting, none)]
        rows.append({"operation": f"{name}, {pending:,} delayed pending", "records": count,
                     "sluice_per_s": round(statistics.median(w[name] for w in waiting)),
                     "baseline": "same, none pending", "raw_per_s": round(statistics.median(n[name] for n in none)),
                     "ratio": round(statistics.median(ratios), 2), "goal": 0.9})
    return rows


def run(records, repeat, pending=1_000_000):
    import psycopg

    admin, url = database_urls()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {BENCH_DB}")
    try:
        os.environ["DATABASE_URL"] = url
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
        os.environ["SLUICE_LOG_LEVEL"] = "WARNING"
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        raw, engine = Raw(url), Engine()
        singles = max(200, records // 20)
        rows = []

        def compare(operation, measure_engine, baseline, measure_raw, goal, count, rounds=repeat):
            engine_rate, raw_rate, ratio = paired(rounds, lambda: measure_engine(count), lambda: measure_raw(count))
            rows.append({"operation": operation, "records": count, "sluice_per_s": round(engine_rate),
                         "baseline": baseline, "raw_per_s": round(raw_rate), "ratio": round(ratio, 2),
                         "goal": goal})

        compare("produce, send_batch of 500", engine.send_batch, "COPY of 500 a transaction", raw.copy, 0.5, records)
        compare("produce, send_batch of 500", engine.send_batch, "one COPY of all rows", raw.copy_all, None, records)
        compare("produce, send_batch of 500", engine.send_batch, "batched INSERT of 500", raw.batched_insert,
                None, records)
        # A round of single sends lasts about half a second, so one round's ratio swings with the machine
        # (the median of 5 rounds moved 0.68-0.82 between runs): at least 11 rounds keep its median steady.
        compare("produce, single send acks=all", engine.single_send, "INSERT + COMMIT", raw.single_insert, 0.8,
                singles, rounds=max(repeat, 11))
        single = rows[-1]  # what a send costs beyond the raw one, derived from the ratio so that the two agree
        single["raw_us"] = round(1e6 / single["raw_per_s"])
        single["extra_us"] = round(single["raw_us"] * (1 / single["ratio"] - 1))
        rows.append(concurrent_sends(engine, url, 4, singles, max(repeat, 5)))
        compare("ordered consume + commit per poll", engine.ordered_consume, "indexed range read",
                raw.range_read, 0.5, records)
        compare("ordered consume + synchronous commit per poll", engine.ordered_consume_sync, "indexed range read",
                raw.range_read, None, records)
        rows.extend(delayed_pending(engine, url, records, repeat, pending))
        return rows
    finally:
        from django.db import connections

        connections.close_all()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")


def print_table(rows):
    headers = ["operation", "records", "sluice/s", "raw baseline", "raw/s", "ratio", "goal", "met"]
    table = [[r["operation"], str(r["records"]), f"{r['sluice_per_s']:,}", r["baseline"], f"{r['raw_per_s']:,}",
              f"{r['ratio']:.2f}", "-" if r["goal"] is None else f">= {r['goal']}",
              "-" if r["goal"] is None else ("yes" if r["ratio"] >= r["goal"] else "NO")] for r in rows]
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(headers)]
    for row in [headers, *table]:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())


def main():
    parser = argparse.ArgumentParser(description="Sluice against raw PostgreSQL, one run, one table.")
    parser.add_argument("--records", type=int, default=50_000, help="records per measurement (default 50000)")
    parser.add_argument("--repeat", type=int, default=5,
                        help="rounds per figure, each measuring both sides; the median ratio is kept (default 5)")
    parser.add_argument("--share-records", type=int, default=20_000, help="records per share-group run (0: skip)")
    parser.add_argument("--delayed-pending", type=int, default=1_000_000,
                        help="delayed records waiting for the last figures (0: skip)")
    parser.add_argument("--latency-seconds", type=float, default=3.0,
                        help="timed sending per cell of bench/latency.py, the delivery latency (0: skip)")
    parser.add_argument("--no-latency", action="store_true", help="skip the delivery latency (bench/latency.py)")
    parser.add_argument("--no-tasks", action="store_true",
                        help="skip the task layer against its peers (bench/tasks.py)")
    parser.add_argument("--tasks", type=int, default=5000,
                        help="no-op tasks enqueued and drained per system by bench/tasks.py (default 5000)")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    if args.records < 1000 or args.repeat < 1:
        parser.error("--records must be at least 1000 and --repeat at least 1")
    print(f"Sluice benchmark, {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores; "
          f"{args.records} records a figure, median ratio of {args.repeat} paired rounds\n")
    admin, _ = database_urls()
    rows = run(args.records, args.repeat, args.delayed_pending)
    print_table(rows)
    for row in rows:
        if "extra_us" in row:
            # Both sides wait for one WAL flush a send, and the flush's time moves with the machine's disk
            # more than the append's extra work does: the ratio is R / (R + extra) for a raw send of R µs.
            print(f"\nSingle send: {row['extra_us']} µs a send beyond the raw INSERT + COMMIT ({row['raw_us']} µs), "
                  f"for the partition row's update (the lock that keeps offsets dense and in commit order) and "
                  f"the client's work; the ratio reaches 0.8 where a raw INSERT + COMMIT takes "
                  f"{4 * row['extra_us']} µs or more.")
    share_rows = []
    if args.share_records:
        # Its own process: it sets up Django on a database of its own.
        print("\nShare groups: per-record accept, members in separate processes, against raw SKIP LOCKED "
              "(claim and delete 100 rows a statement)", flush=True)  # before the child's output
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            subprocess.run([sys.executable, str(ROOT / "bench" / "share.py"), "--records", str(args.share_records),
                            "--repeat", str(max(3, args.repeat // 2 + 1)),
                            "--json", out.name], check=True, env={**os.environ, "DATABASE_URL": admin})
            share_rows = json.loads(Path(out.name).read_text())
    latency_rows, failed = latency(admin, 0 if args.no_latency else args.latency_seconds)
    task_rows, tasks_failed = tasks(admin, 0 if args.no_tasks else args.tasks)
    if args.json:
        Path(args.json).write_text(json.dumps({"log": rows, "share": share_rows, "latency": latency_rows,
                                               "tasks": task_rows}, indent=2))
    if failed or tasks_failed:
        sys.exit("bench: " + " and ".join(part for part, bad in (("the delivery latency part", failed),
                                                                 ("the tasks part", tasks_failed)) if bad) + " failed")


def latency(admin, seconds):
    """Run bench/latency.py (its own process and database), which prints its table; return its rows
    and whether it failed. A failure there does not lose the figures above."""
    if seconds <= 0:
        return [], False
    print("\nDelivery latency, send to receipt (bench/latency.py): senders, consumers, workers, the relay and "
          "the mover each in a process of their own", flush=True)
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        done = subprocess.run([sys.executable, str(ROOT / "bench" / "latency.py"), "--seconds", f"{seconds:g}",
                               "--json", out.name], env={**os.environ, "DATABASE_URL": admin})
        if done.returncode:
            return [], True
        return json.loads(Path(out.name).read_text()), False


def tasks(admin, count):
    """Run bench/tasks.py (its own process and databases), which prints its table; return its rows
    and whether it failed."""
    if count <= 0:
        return [], False
    print("\nTasks: Sluice's task layer against pgqueuer, procrastinate, django-q2, django-tasks and Celery "
          "(bench/tasks.py)", flush=True)
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        done = subprocess.run([sys.executable, str(ROOT / "bench" / "tasks.py"), "--tasks", str(count),
                               "--json", out.name], env={**os.environ, "DATABASE_URL": admin})
        if done.returncode:
            return [], True
        return json.loads(Path(out.name).read_text()), False


if __name__ == "__main__":
    main()
