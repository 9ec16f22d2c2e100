"""The task layer against its peers, in one run on one PostgreSQL server: enqueue (single, in a
transaction, against a raw INSERT + COMMIT; and in bulk), drain no-op tasks with 2 worker processes,
and Sluice's enqueue -> start latency at a steady rate.

Usage: DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres python bench/tasks.py [--tasks N]
    [--peers NAME,...] [--no-peers] [--json PATH]
It creates and drops its own databases (sluice_bench_tasks, and one per PostgreSQL peer,
sluice_bench_tasks_<peer>); the peers (pgqueuer, procrastinate, django-q2 on its ORM broker and on
Sluice's, django-tasks, Celery on Redis, on RabbitMQ and on Sluice) come from the `bench` dependency group, and each runs in a process of its own
(bench/task_peers.py). A peer whose package or server is missing is reported as skipped.
"""
import argparse
import contextlib
import gc
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import latency
import run

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BENCH_DB = "sluice_bench_tasks"
PEERS = ["pgqueuer", "procrastinate", "django-q2", "django-q2-sluice", "django-tasks", "celery-redis",
         "celery-rabbitmq", "celery-sluice"]
BULK_BATCH = 1000  # tasks a bulk call, for Sluice and for the peers that have a bulk call
POLL_S = 0.02  # how often a drain's progress is read
MARK = 0.1  # a drain is timed from the moment this share of its backlog is done, so start-up is not counted


# Shared with bench/task_peers.py ---------------------------------------------------------------

@contextlib.contextmanager
def interrupted_by_sigterm():
    """Turn SIGTERM into KeyboardInterrupt, so the cleanup in finally blocks runs as on Ctrl-C."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class Processes:
    """Worker processes, each in a session of its own (with its children: task processes, prefork
    pools), stopped with SIGTERM and then SIGKILL as a group whatever happens."""

    def __init__(self, logs):
        self.logs = Path(logs)
        self.started = []

    def start(self, name, command, env, base=None):
        """Start command with env added to base (default: this process's environment now)."""
        log = open(self.logs / f"{name}.log", "w")
        environment = {**(os.environ if base is None else base), **env}
        self.started.append((name, subprocess.Popen(command, env=environment, cwd=ROOT, stdout=log,
                                                     stderr=subprocess.STDOUT, start_new_session=True)))
        log.close()

    def check(self):
        """Raise if a worker exited, with the end of its log."""
        for name, proc in self.started:
            if proc.poll() is not None:
                tail = (self.logs / f"{name}.log").read_text(errors="replace").strip().splitlines()[-3:]
                raise RuntimeError(f"{name} exited with {proc.returncode}: {' | '.join(tail)}")

    def stop(self, grace=10.0):
        for _, proc in self.started:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for _, proc in self.started:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.1, deadline - time.monotonic()))
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # the group: task processes outlive a killed parent
            proc.wait()
        self.started = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def drain(done, total, timeout, processes=None):
    """Watch done() (tasks finished) reach total; return the rate from the moment a tenth was done
    to the last (or to the timeout, then marked partial), which leaves the workers' start-up out.
    A drain that finished before a tenth of it was seen (a small backlog) is timed from the start."""
    start = time.monotonic()
    deadline = start + timeout
    mark = None
    while True:
        count, now = done(), time.monotonic()
        if mark is None and count >= max(1, MARK * total):
            mark = (count, now)
        if count >= total or now > deadline:
            break
        if processes is not None:
            processes.check()
        time.sleep(POLL_S)
    if count >= total and (mark is None or now <= mark[1]):
        mark = (0, start)
    if mark is None or now <= mark[1]:
        return {"drain_per_s": None, "drained": count, "partial": True}
    return {"drain_per_s": round((count - mark[0]) / (now - mark[1])), "drained": count, "partial": count < total}


def drop_databases(admin, names):
    import psycopg

    with psycopg.connect(admin, autocommit=True) as conn:
        for name in names:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def create_database(admin, name):
    import psycopg

    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}")
    return latency.with_db(admin, name)


def peer_database(base, peer):
    return f"{base}_{peer.replace('-', '_')}"


# Sluice ----------------------------------------------------------------------------------------

def sluice(admin, args, logs):
    """Sluice's row: single enqueues paired with raw INSERT + COMMIT, bulk enqueue, drain by 2 worker
    processes, then the enqueue -> start latency with the same workers."""
    url = create_database(admin, args.database)
    try:
        os.environ["SLUICE_EXTRA_APPS"] = "bench.taskapp"
        latency.setup_django(url)
        from django.core.management import call_command

        from bench.taskapp import tasks as bench_tasks
        from scheduler import tasks

        call_command("migrate", verbosity=0)
        tasks.ensure_queue(bench_tasks.QUEUE)
        # The set-up's garbage goes before anything is timed: a full collection of what migrate left
        # fell into the first bulk call (58 ms of its 83; the next took 19). The peers' harness,
        # bench/task_peers.py, collects before timing too.
        gc.collect()
        row = {"system": "Sluice", "results": "stored (task table)"}
        if args.singles:
            row.update(single_enqueue(url, bench_tasks.noop, args))
        row["bulk_per_s"] = bulk_enqueue(bench_tasks.noop, args.tasks)
        with Processes(logs) as workers:
            sluice_workers(workers, bench_tasks.QUEUE, url, args)
            total = backlog()
            row.update(drain(sluice_done_counter(url), total, args.drain_timeout, workers))
        if args.latency_seconds > 0:
            with Processes(logs) as workers:
                sluice_workers(workers, bench_tasks.LATENCY_QUEUE, url, args)
                row["latency"] = enqueue_to_start(bench_tasks.started, args.rate, args.latency_seconds, workers)
        return row
    finally:
        from django.db import connections

        connections.close_all()
        drop_databases(admin, [args.database])


def sluice_workers(workers, queue, url, args):
    """Start the worker processes of a queue, as the product runs them: `manage.py worker`."""
    for n in range(args.workers):
        workers.start(f"sluice-{queue}-{n}", [sys.executable, "manage.py", "worker", "--queue", queue,
                                              "--concurrency", str(args.concurrency)],
                      {"DATABASE_URL": url, "SLUICE_EXTRA_APPS": "bench.taskapp", "SLUICE_LOG_LEVEL": "WARNING"})


def single_enqueue(url, noop, args):
    """`noop.enqueue()` with no transaction of the caller's (its statement is its own transaction)
    against one INSERT + COMMIT in autocommit (bench/run.py's Raw), in paired ABBA rounds, the median
    ratio the figure; beside it the enqueue in a transaction.atomic() of its own against the INSERT
    in a BEGIN ... COMMIT of its own (three round trips each)."""
    from django.db import transaction

    raw = run.Raw(url)

    def enqueue(count):
        began = time.perf_counter()
        for _ in range(count):
            noop.enqueue()
        return run.rate(count, time.perf_counter() - began)

    def enqueue_in_atomic(count):
        began = time.perf_counter()
        for _ in range(count):
            with transaction.atomic():
                noop.enqueue()
        return run.rate(count, time.perf_counter() - began)

    enqueue(20)  # connected, topic cached, statements prepared
    raw.single_insert(20)
    ours, theirs, ratio = run.paired(args.rounds, lambda: enqueue(args.singles),
                                     lambda: raw.single_insert(args.singles))
    ours_tx, theirs_tx, ratio_tx = run.paired(max(1, args.rounds // 2), lambda: enqueue_in_atomic(args.singles),
                                              lambda: raw.single_insert(args.singles, explicit=True))
    raw.conn.close()
    return {"single_per_s": round(ours), "raw_single_per_s": round(theirs), "single_ratio": round(ratio, 2),
            "single_tx_per_s": round(ours_tx), "raw_single_tx_per_s": round(theirs_tx),
            "single_tx_ratio": round(ratio_tx, 2)}


def bulk_enqueue(noop, count):
    began = time.perf_counter()
    for start in range(0, count, BULK_BATCH):
        noop.enqueue_many([((), {})] * min(BULK_BATCH, count - start))
    return round(run.rate(count, time.perf_counter() - began))


def backlog():
    from scheduler import models

    return models.TaskResult.objects.filter(state=models.State.QUEUED).count()


def sluice_done_counter(url):
    """Tasks done, read from the queue's share group: the records handed out less those still
    unfinished (acquired or released, a few range rows). A task's record is accepted in the
    transaction that stores its result, so this is the count of results stored, as pgqueuer's count
    of its queue table is the count of jobs left. (A count of the task table's unfinished rows, by
    the (queue, state) index, took 8 ms or more at 30,000 tasks, every 20 ms: 40% of the database
    activity sampled during a drain, taken from the workers it measures.)"""
    import psycopg

    from bench.taskapp import tasks as bench_tasks
    from scheduler import tasks

    conn = psycopg.connect(url, autocommit=True)
    query = """
        SELECT (coalesce(sum(p.acquire_offset), 0)
               - coalesce((SELECT sum(d.last_offset - d."offset" + 1) FROM queueing_sharedelivery d
                            WHERE d.group_id = g.id), 0))::bigint
          FROM queueing_sharegroup g JOIN queueing_sharepartition p ON p.group_id = g.id
         WHERE g.name = %s
         GROUP BY g.id"""
    group = tasks.topic_for(bench_tasks.QUEUE)

    def done():
        row = conn.execute(query, [group]).fetchone()
        return row[0] if row else 0

    return done


def enqueue_to_start(started, rate, seconds, workers, warmup=0.3):
    """Enqueue `started` at rate a second on an absolute schedule, each in its own transaction, for
    warmup + seconds; return p50/p99/max milliseconds from just before the enqueue to the task's first
    line (its return value), over the tasks enqueued after the warm-up."""
    from django.db import transaction

    from scheduler import models

    finished = models.TaskResult.objects.filter(task_name=started.name, state=models.State.SUCCEEDED)
    for _ in range(2 * len(workers.started)):  # not timed: the workers are up and their task processes ready
        started.enqueue(0.0)
    deadline = time.monotonic() + 60
    while finished.count() < 2 * len(workers.started) and time.monotonic() < deadline:
        workers.check()
        time.sleep(0.05)
    began = time.time() + 0.05
    sent = 0
    while True:
        due = began + sent / rate
        if due >= began + warmup + seconds:
            break
        pause = due - time.time()
        if pause > 0:
            time.sleep(pause)
        with transaction.atomic():
            started.enqueue(time.time())
        sent += 1
    reached = sent / (time.time() - began)
    finished = finished.filter(args__0__gt=0)
    deadline = time.monotonic() + 30
    while finished.count() < sent and time.monotonic() < deadline:
        workers.check()
        time.sleep(0.05)
    pairs = finished.values_list("args", "return_value")
    timed = sorted(1000 * (start - args[0]) for args, start in pairs if args[0] >= began + warmup)
    if not timed:
        return {"rate": rate, "reached": round(reached), "sent": sent, "timed": 0}
    return {"rate": rate, "reached": round(reached), "sent": sent, "finished": len(pairs), "timed": len(timed),
            "p50_ms": round(timed[(len(timed) - 1) // 2], 1),
            "p99_ms": round(timed[math.ceil(0.99 * len(timed)) - 1], 1),
            "max_ms": round(timed[-1], 1)}


# Peers -----------------------------------------------------------------------------------------

def peer(name, admin, args, logs):
    """Run one peer in a process of its own (bench/task_peers.py); its row, or a skipped or failed one."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        command = [sys.executable, str(ROOT / "bench" / "task_peers.py"), name, "--tasks", str(args.tasks),
                   "--singles", str(args.singles), "--drain-timeout", str(args.drain_timeout),
                   "--database", peer_database(args.database, name), "--logs", str(logs), "--json", out.name]
        child = subprocess.Popen(command, env={**os.environ, "DATABASE_URL": admin}, cwd=ROOT)
        try:
            code = child.wait(timeout=args.drain_timeout + 240)
        except subprocess.TimeoutExpired:
            child.terminate()  # its finally stops its workers and drops its database
            child.wait(30)
            return {"system": name, "skipped": "timed out"}
        finally:
            if child.poll() is None:
                child.terminate()
                child.wait(30)
        text = Path(out.name).read_text()
        if code or not text:
            return {"system": name, "skipped": f"failed (exit code {code}; its output above)"}
        return json.loads(text)


# The table -------------------------------------------------------------------------------------

def number(value):
    return "-" if value is None else f"{value:,}"


def print_table(rows):
    headers = ["system", "single enqueue/s", "bulk enqueue/s", "drain/s", "drained", "results", "notes"]
    table = []
    for r in rows:
        if "skipped" in r:
            table.append([r["system"], "-", "-", "-", "-", "-", f"skipped: {r['skipped']}"])
            continue
        drained = f"{r['drained']:,}" + (" (partial)" if r.get("partial") else "")
        table.append([r["system"], number(r.get("single_per_s")), number(r.get("bulk_per_s")),
                      number(r.get("drain_per_s")), drained, r.get("results", "-"), r.get("notes", "")])
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(headers)]
    for row in [headers, *table]:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())


def goals(rows):
    """The issue's goals, each with the figures it compares: [(goal, measured, met)]."""
    ours = rows[0]
    by_name = {r["system"]: r for r in rows[1:] if "skipped" not in r}
    checks = []
    pgq = by_name.get("pgqueuer", {}).get("drain_per_s")
    if pgq and ours.get("drain_per_s"):
        ratio = ours["drain_per_s"] / pgq
        checks.append(("drain >= 2 x pgqueuer's", f"{ours['drain_per_s']:,} / {pgq:,} = {ratio:.2f} x", ratio >= 2))
    else:
        checks.append(("drain >= 2 x pgqueuer's", "pgqueuer not measured", None))
    if "single_ratio" in ours:
        checks.append(("single enqueue >= 0.8 x raw INSERT + COMMIT",
                       f"{ours['single_per_s']:,} / {ours['raw_single_per_s']:,}: median paired ratio "
                       f"{ours['single_ratio']:.2f}", ours["single_ratio"] >= 0.8))
        checks.append(("(both in BEGIN ... COMMIT of their own)",
                       f"{ours['single_tx_per_s']:,} / {ours['raw_single_tx_per_s']:,}: median paired ratio "
                       f"{ours['single_tx_ratio']:.2f}", None))
    bulks = {n: r["bulk_per_s"] for n, r in by_name.items() if r.get("bulk_per_s")}
    if bulks:
        best = max(bulks, key=bulks.get)
        checks.append(("bulk enqueue ahead of every peer's", f"{ours['bulk_per_s']:,} against {best}'s "
                       f"{bulks[best]:,} ({ours['bulk_per_s'] / bulks[best]:.2f} x)", ours["bulk_per_s"] > bulks[best]))
    checks.append(compare(by_name, "celery-sluice", "celery-rabbitmq", 1, "Celery on Sluice drain >= on RabbitMQ's"))
    checks.append(compare(by_name, "django-q2-sluice", "django-q2", 2, "django-q2 on Sluice drain >= 2 x its ORM's"))
    lat = ours.get("latency")
    if lat and not lat.get("timed"):
        checks.append((f"enqueue -> start p99 <= 15 ms at {lat['rate']:,}/s",
                       f"none of {lat['sent']:,} tasks started within 30 s (the producer reached {lat['reached']:,}/s)",
                       False))
    elif lat:
        note = "" if lat["reached"] >= 0.9 * lat["rate"] else f"; the producer reached {lat['reached']:,}/s only"
        if lat["finished"] < lat["sent"]:
            note += f"; {lat['sent'] - lat['finished']:,} of {lat['sent']:,} not started within 30 s, left out"
        checks.append((f"enqueue -> start p99 <= 15 ms at {lat['rate']:,}/s",
                       f"p50 {lat['p50_ms']} ms, p99 {lat['p99_ms']} ms, max {lat['max_ms']} ms over {lat['timed']:,} "
                       f"tasks{note}", lat["p99_ms"] <= 15 and lat["finished"] == lat["sent"]))
    return checks


def compare(by_name, name, peer_name, factor, goal):
    """(goal, measured, met) of name's drain against factor x peer_name's, both from this run."""
    ours, theirs = by_name.get(name, {}).get("drain_per_s"), by_name.get(peer_name, {}).get("drain_per_s")
    if not ours or not theirs:
        return goal, f"{name} or {peer_name} not measured", None
    return goal, f"{ours:,} / {theirs:,} = {ours / theirs:.2f} x", ours >= factor * theirs


def report(rows, args):
    print(f"\nTasks, {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores: {args.tasks:,} no-op tasks enqueued "
          f"in bulk then drained by {args.workers} worker processes (drain timed from {MARK:.0%} done to the last); "
          f"single enqueues: {args.rounds} rounds of {args.singles:,}\n")
    print_table(rows)
    print()
    for goal, measured, met in goals(rows):
        print(f"{goal:<50}  {measured:<60}  {'-' if met is None else ('yes' if met else 'NO')}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=5000, help="tasks enqueued in bulk, then drained (default 5000)")
    parser.add_argument("--singles", type=int, default=300,
                        help="single enqueues a round (paired with as many raw INSERT + COMMIT); 0 skips (default 300)")
    parser.add_argument("--rounds", type=int, default=7, help="paired rounds of single enqueues (default 7)")
    parser.add_argument("--workers", type=int, default=2, help="Sluice worker processes (default 2)")
    parser.add_argument("--concurrency", type=int, default=1,
                        help="--concurrency of each Sluice worker: task processes it runs (default 1)")
    parser.add_argument("--rate", type=int, default=500, help="enqueues a second for the latency (default 500)")
    parser.add_argument("--latency-seconds", type=float, default=3.0, help="timed seconds of the latency (0: skip)")
    parser.add_argument("--drain-timeout", type=float, default=30.0,
                        help="most seconds a drain may take; a slower one is timed on what it did (default 30)")
    parser.add_argument("--peers", default=",".join(PEERS), help=f"comma-separated peers (default {','.join(PEERS)})")
    parser.add_argument("--no-peers", action="store_true", help="Sluice and the raw limit only")
    parser.add_argument("--database", default=BENCH_DB, help=f"the database to create and drop (default {BENCH_DB}); "
                        "the peers' are named after it")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    peers = [] if args.no_peers else [p for p in args.peers.split(",") if p]
    unknown = set(peers) - set(PEERS)
    if unknown or args.tasks < 10 or args.rounds < 1:
        parser.error(f"unknown peers: {', '.join(sorted(unknown))}" if unknown else "--tasks >= 10, --rounds >= 1")
    admin, _ = run.database_urls()
    with interrupted_by_sigterm(), tempfile.TemporaryDirectory(prefix="bench-tasks-") as logs:
        try:
            rows = [sluice(admin, args, logs)]
            for name in peers:
                print(f"[tasks] {name}", file=sys.stderr, flush=True)
                rows.append(peer(name, admin, args, logs))
        finally:
            drop_databases(admin, [args.database, *(peer_database(args.database, p) for p in peers)])
    report(rows, args)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
