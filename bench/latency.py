"""Delivery latency, from send to receipt, by path, producer, rate, partition count and consumer kind.

Usage: DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres python bench/latency.py [--seconds S]
    [--min-timed N] [--full] [--only REGEX ...] [--json PATH] [--database NAME]
It creates and drops its own database, sluice_bench_latency unless --database names another. Every
sender, consumer, worker, relay and mover is a process of its own, with the default 1,000 ms poll
fallback, so a consumer that sleeps through committed records shows up as a latency near a second.
Each value carries the time.time() taken just before its send (a delayed record: its due time; an
outbox event is timed from just after its business transaction commits, which the sender reports);
the receiver notes time.time() on receipt. Senders pace on an absolute schedule (a burst sender makes
BURST sends back to back each time one is due, then waits for the next, and its cell's goal is that of
the rate its bursts came at); records sent in the first --warmup seconds of a cell are counted for
loss but not timed.
"""
import argparse
import collections
import dataclasses
import json
import math
import multiprocessing
import os
import queue as queue_module
import random
import re
import statistics
import sys
import threading
import time
import traceback
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BENCH_DB = "sluice_bench_latency"
KEYS = [f"key-{n}" for n in range(97)]
BATCH = 100
BURST = 25  # single sends a sender makes back to back in a burst, then none until its next burst is due
WARMUP_TOPIC = "lat.warmup"  # where senders make their first send, so it is not timed
MAX_MS = 100


@dataclasses.dataclass(frozen=True)
class Cell:
    path: str  # log, outbox or delayed
    producer: str  # single, burst, batch, outbox or delayed
    senders: int
    rate: int  # records a second, all senders together
    partitions: int
    consumer: str  # ordered, ordered x2, share x2 or worker

    @property
    def producer_label(self):
        return {"single": "send", "burst": f"send, bursts of {BURST}", "batch": f"send_batch of {BATCH}",
                "outbox": "outbox publish",
                "delayed": "send, delay 0.2-1 s"}[self.producer] + (f" x{self.senders}" if self.senders > 1 else "")

    @property
    def label(self):
        return f"{self.path} {self.producer_label} {self.rate}/s {self.partitions}p {self.consumer}"

    @property
    def members(self):
        return 2 if self.consumer.endswith("x2") else 1


def all_cells(full):
    """The default cells, or with full the whole cross product of the log's cells; then the outbox
    and delayed paths."""
    producers = [("single", 1), ("single", 4), ("batch", 1)]
    rates, kinds = [100, 1000, 5000], ["ordered", "ordered x2", "share x2", "worker"]
    if full:
        cells = [Cell("log", p, s, r, n, k) for k in kinds for p, s in producers for r in rates for n in (1, 4)]
    else:
        cells = [Cell("log", p, s, r, n, "ordered") for p, s in producers for r in rates for n in (1, 4)]
        for kind in kinds[1:]:
            cells += [Cell("log", "single", 4, r, 4, kind) for r in rates]
            cells.append(Cell("log", "single", 1, 1000, 1, kind))
    # Idle, then a burst from every sender at once, then idle again: at 100/s one burst of 100 records a
    # second, each a wake-up from a sleep; at 1,000/s ten.
    cells += [Cell("log", "burst", 4, r, 4, k) for k in ("ordered", "share x2", "worker") for r in (100, 1000)]
    # From several processes, as business transactions commit: one process reached about 700 publishes
    # and 200 delayed sends a second here.
    cells += [Cell("outbox", "outbox", 4, r, 4, "ordered") for r in (100, 1000)]
    cells += [Cell("delayed", "delayed", 4, r, 4, "ordered") for r in (100, 1000)]
    return cells


def with_db(url, name):
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


def setup_django(url):
    os.environ.update(DATABASE_URL=url, SLUICE_LOG_LEVEL="WARNING", SLUICE_POLL_FALLBACK_MS="1000")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()


# Child processes -------------------------------------------------------------------------------
# Each reports on the cell's queue: ("ready", name, None), then ("done", name, report), or
# ("error", name, traceback).

def _child(name, role, url, params, sync):
    queue = sync[0]
    try:
        setup_django(url)
        ROLES[role](name, params, *sync)
    except BaseException:  # noqa: BLE001 - the parent reports it in the cell's row
        queue.put(("error", name, traceback.format_exc()))


def _send_function(cell, topic, index):
    """A function of seq that makes one send (one record, or a batch) and returns how many records
    it sent; commits collects outbox commit times by seq."""
    from django.db import transaction

    from outbox import outbox
    from queueing import producer

    commits = {}

    def single(seq):
        key = random.choice(KEYS)
        now = time.time()
        producer.send(topic, b"%d %d %.6f %.6f" % (index, seq, now, now), key=key, acks="all")
        return 1

    def batch(seq):
        keys = random.choices(KEYS, k=BATCH)
        now = time.time()
        values = [b"%d %d %.6f %.6f" % (index, seq + n, now, now) for n in range(BATCH)]
        producer.send_batch(topic, values, keys=keys, acks="all")
        return BATCH

    def delayed(seq):
        key, delay = random.choice(KEYS), random.uniform(0.2, 1.0)
        now = time.time()
        producer.send(topic, b"%d %d %.6f %.6f" % (index, seq, now + delay, now), key=key, delay=delay)
        return 1

    def publish(seq):
        key = random.choice(KEYS)
        with transaction.atomic():
            outbox.publish(aggregate_type="bench", aggregate_id=key, event_type="bench.latency", key=key,
                           payload={"s": index, "n": seq, "t": time.time()}, destination=f"sluice:{topic}")
        commits[seq] = time.time()
        return 1

    return {"single": single, "burst": single, "batch": batch, "delayed": delayed,
            "outbox": publish}[cell.producer], commits


def _warm_up(cell):
    """One send like the cell's to a topic nobody times: connects and prepares the statements."""
    from django.db import transaction

    from outbox import outbox
    from queueing import producer

    if cell.producer == "outbox":
        with transaction.atomic():
            outbox.publish(aggregate_type="bench", aggregate_id="warm-up", event_type="bench.warm-up",
                           payload={}, destination=f"sluice:{WARMUP_TOPIC}")
    elif cell.producer == "batch":
        producer.send_batch(WARMUP_TOPIC, [b"w"] * BATCH, keys=random.choices(KEYS, k=BATCH))
    else:  # a delayed one waits an hour, past the end of the run
        producer.send(WARMUP_TOPIC, b"w", key=KEYS[0], **({"delay": 3600} if cell.producer == "delayed" else {}))


def sender(name, params, queue, go, stop, progress, start):
    """Send on an absolute schedule: the i-th send of the cell is due at start + i * per send / rate,
    sends taken in turn by the senders; one that is behind sends at once. Stops at the end time."""
    from queueing import topics

    cell, index = params["cell"], params["index"]
    send, commits = _send_function(cell, params["topic"], index)
    topics.cached_topic(params["topic"])
    _warm_up(cell)
    queue.put(("ready", name, None))
    if not go.wait(timeout=600) or stop.is_set():
        return
    began = start.value
    end = began + params["duration"]
    per_send = BATCH if cell.producer == "batch" else 1
    interval, offset = per_send * cell.senders / cell.rate, index * per_send / cell.rate
    # In bursts, BURST sends share one due time, and a burst is due as BURST evenly paced sends would be.
    burst = BURST if cell.producer == "burst" else 1
    sent = sends = 0
    bursts = []  # how long each whole burst took to send, first send's start to last send's return
    while not stop.is_set():
        due = began + offset + (sends // burst) * burst * interval
        if due >= end:
            break
        pause = due - time.time()
        if pause > 0:
            time.sleep(pause)
        if time.time() >= end:
            break
        if sends % burst == 0:
            burst_began = time.time()
        sent += send(sent)
        sends += 1
        if burst > 1 and sends % burst == 0:
            bursts.append(time.time() - burst_began)
    # Time to the later of the last send's return and the next send's due time: on schedule that is
    # sent / rate, behind it the whole window.
    span = max(time.time(), began + offset + sends * interval) - began
    queue.put(("done", name, {"index": index, "sent": sent, "span": span, "commits": commits, "bursts": bursts}))


def _decode(seen, outbox_path):
    """(sender, seq, reference time, send time, receipt time) of each record received."""
    rows = []
    for value, received in seen:
        if outbox_path:
            data = json.loads(value)["data"]
            rows.append((data["s"], data["n"], data["t"], data["t"], received))
        else:
            s, n, ref, sent = value.split()
            rows.append((int(s), int(n), float(ref), float(sent), received))
    return rows


def _settle(member, group, expected):
    """Poll until every expected member has joined and this one has synced to the group's latest
    generation, so no rebalance falls inside the timed window."""
    from queueing import models

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        member.poll(timeout=0.1)  # nothing is sent before every member is ready
        row = models.ConsumerGroup.objects.get(name=group)
        if (models.GroupMember.objects.filter(group=row).count() >= expected
                and member.assignment.generation == row.generation):
            return
    raise RuntimeError(f"group {group} did not settle with {expected} members")


def member(name, params, queue, go, stop, progress, start):
    """An ordered member (Consumer) or a share member (ShareConsumer, accepting each record)."""
    from queueing import consumer, share

    cell, topic, group = params["cell"], params["topic"], params["group"]
    shared = cell.consumer.startswith("share")
    if shared:
        client = share.ShareConsumer(group, [topic], auto_offset_reset="earliest")
        client.poll(timeout=0)
    else:
        client = consumer.Consumer(group, [topic], auto_offset_reset="earliest")
        _settle(client, group, cell.members)
    queue.put(("ready", name, None))
    seen = []
    while not stop.is_set():
        records = client.poll(timeout=1.0)
        received = time.time()
        for record in records:
            seen.append((record.value, received))
            if shared:
                client.accept(record)
        if records:
            with progress.get_lock():
                progress.value += len(records)
    late = getattr(client, "late_wakeups", None)
    if cell.members > 1:
        # No member leaves (a rebalance) while another still polls: a member handed back a partition
        # it kept re-reads from the last auto commit, which would count as duplicates of the teardown.
        try:
            params["closing"].wait(timeout=30)
        except threading.BrokenBarrierError:
            pass
    client.close()
    queue.put(("done", name, {"seen": _decode(seen, cell.path == "outbox"), "late": late}))


def _run_until_stopped(loop, stop):
    """Run a loop (queueing.loops.Loop) in this thread until the parent sets stop."""
    watcher = threading.Thread(target=lambda: (stop.wait(), loop.stop()), daemon=True)
    watcher.start()
    loop.run()


def worker(name, params, queue, go, stop, progress, start):
    """queueing.worker.Worker with a handler registered here that notes each record's receipt."""
    from queueing import registry
    from queueing import worker as worker_module

    seen = []

    def handle(record):
        seen.append((record.value, time.time()))
        with progress.get_lock():
            progress.value += 1

    registry.handler(params["topic"], group=params["group"])(handle)
    loop = worker_module.Worker(params["group"], registry.subscriptions(params["group"]), poll_timeout=0)
    loop.run_once()  # joins the group
    loop.poll_timeout = 1.0
    queue.put(("ready", name, None))
    _run_until_stopped(loop, stop)
    queue.put(("done", name, {"seen": _decode(seen, False), "late": getattr(loop.consumer, "late_wakeups", None)}))


def mover_or_relay(name, params, queue, go, stop, progress, start):
    """The outbox relay or the delayed-record mover, each in its run loop."""
    if params["cell"].path == "outbox":
        from outbox import relay

        loop = relay.Relay()
    else:
        from queueing import delayed

        loop = delayed.Mover()
    loop.run_once()
    queue.put(("ready", name, None))
    _run_until_stopped(loop, stop)
    queue.put(("done", name, {"seen": [], "late": getattr(loop, "late_wakeups", None)}))


ROLES = {"sender": sender, "member": member, "worker": worker, "loop": mover_or_relay}


# The parent ------------------------------------------------------------------------------------

class CellFailed(Exception):
    pass


def _collect(queue, procs, inbox, kind, names, timeout):
    """Wait until each of names has reported kind; raise CellFailed on an error or a dead process."""
    deadline = time.monotonic() + timeout
    while any((kind, n) not in inbox for n in names):
        if time.monotonic() > deadline:
            raise CellFailed(f"no {kind!r} from {', '.join(n for n in names if (kind, n) not in inbox)} "
                             f"in {timeout:.0f}s")
        try:
            what, name, payload = queue.get(timeout=0.5)
        except queue_module.Empty:
            dead = [n for n, p in procs.items() if p.exitcode not in (None, 0)]
            if dead:
                raise CellFailed(f"{dead[0]} exited with {procs[dead[0]].exitcode}") from None
            continue
        if what == "error":
            raise CellFailed(f"{name} failed: {payload.strip().splitlines()[-1]}")
        inbox[(what, name)] = payload
    return {n: inbox[(kind, n)] for n in names}


def _processes(ctx, cell, url, topic, group, duration, sync, closing):
    roles = {f"sender{i}": ("sender", i) for i in range(cell.senders)}
    receiver = "worker" if cell.consumer == "worker" else "member"
    roles.update({f"{receiver}{i}": (receiver, i) for i in range(cell.members)})
    if cell.path != "log":
        roles["loop"] = ("loop", 0)
    procs = {}
    for name, (role, index) in roles.items():
        params = {"cell": cell, "index": index, "topic": topic, "group": group, "duration": duration,
                  "closing": closing}
        procs[name] = ctx.Process(target=_child, args=(name, role, url, params, sync), name=name, daemon=True)
    return procs


def run_cell(url, cell, number, seconds, warmup, drain):
    """Start the cell's processes, let the senders run, wait for the records, stop; return a row."""
    from queueing import topics

    topic = group = f"lat.{number}"
    topics.create_topic(topic, partitions=cell.partitions)
    ctx = multiprocessing.get_context("spawn")
    queue, go, stop = ctx.Queue(), ctx.Event(), ctx.Event()
    progress, start = ctx.Value("q", 0), ctx.Value("d", 0.0)
    # The parent holds every shared object until the children are joined: a spawned child opens them by
    # name, after the parent's start() has returned.
    closing = ctx.Barrier(cell.members)
    procs = _processes(ctx, cell, url, topic, group, warmup + seconds, (queue, go, stop, progress, start), closing)
    senders = [n for n in procs if n.startswith("sender")]
    others = [n for n in procs if n not in senders]
    inbox = {}
    try:
        for proc in procs.values():
            proc.start()
        _collect(queue, procs, inbox, "ready", list(procs), timeout=180)
        start.value = time.time() + 0.05
        go.set()
        sent = _collect(queue, procs, inbox, "done", senders, timeout=warmup + seconds + 60)
        total = sum(r["sent"] for r in sent.values())
        # Delayed records fall due up to a second after their send.
        deadline = time.monotonic() + drain + (1.0 if cell.path == "delayed" else 0.0)
        while progress.value < total and time.monotonic() < deadline:
            time.sleep(0.01)
        stop.set()
        received = _collect(queue, procs, inbox, "done", others, timeout=60)
    finally:
        stop.set()
        go.set()
        for proc in procs.values():
            proc.join(timeout=15)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)
    return summarise(cell, start.value, warmup, sent, received)


def summarise(cell, began, warmup, sent, received):
    commits = {(r["index"], seq): t for r in sent.values() for seq, t in r["commits"].items()}
    expected = {(r["index"], seq) for r in sent.values() for seq in range(r["sent"])}
    counts, first = collections.Counter(), {}
    for report in received.values():
        for s, n, ref, at, got in report["seen"]:
            counts[(s, n)] += 1
            if (s, n) in commits:
                ref = at = commits[(s, n)]
            if (s, n) not in first or got - ref < first[(s, n)][0]:
                first[(s, n)] = (got - ref, at)
    latencies = sorted(1000 * lat for lat, at in first.values() if at >= began + warmup)
    lates = [r["late"] for r in received.values() if r["late"] is not None]
    span = max(r["span"] for r in sent.values())
    total = sum(r["sent"] for r in sent.values())
    # A burst's records come at the senders' own pace, whatever the cell's mean rate: its goal is that
    # of the rate they came at (the senders' rates while sending a burst, added up).
    bursts = [statistics.median(r["bursts"]) for r in sent.values() if r["bursts"]]
    burst_rate = round(sum(BURST / seconds for seconds in bursts if seconds > 0)) if bursts else None
    goal_rate = max(cell.rate, burst_rate or 0)
    row = {**dataclasses.asdict(cell), "producer": cell.producer_label, "reached": round(total / span) if span else 0,
           "sent": total, "received": len(set(counts) & expected), "lost": len(expected - set(counts)),
           "duplicates": sum(c - 1 for c in counts.values()), "unexpected": len(set(counts) - expected),
           "records": len(latencies), "over_max": sum(1 for lat in latencies if lat > MAX_MS),
           "late_wakeups": sum(lates) if lates else None,
           "burst_rate": burst_rate, "p99_goal_ms": 15 if goal_rate <= 1000 else 50, "max_goal_ms": MAX_MS}
    if latencies:
        row.update(p50_ms=round(latencies[(len(latencies) - 1) // 2], 1),
                   p99_ms=round(latencies[math.ceil(0.99 * len(latencies)) - 1], 1), max_ms=round(latencies[-1], 1))
    row["notes"] = _notes(cell, row)
    clean = not row["lost"] and not row["unexpected"] and (cell.consumer.startswith("share") or not row["duplicates"])
    row["met"] = (latencies and clean and row["p99_ms"] <= row["p99_goal_ms"] and row["max_ms"] <= MAX_MS)
    return row


def _notes(cell, row):
    notes = []
    if row["burst_rate"]:
        notes.append(f"bursts came at {row['burst_rate']:,}/s")
    if row["reached"] < 0.9 * cell.rate:
        notes.append(f"could not reach {cell.rate:,}/s (reached {row['reached']:,}/s)")
    if row["lost"]:
        notes.append(f"LOST {row['lost']}")
    if row["duplicates"]:
        notes.append(f"{row['duplicates']} redelivered" if cell.consumer.startswith("share")
                     else f"DUPLICATED {row['duplicates']}")
    if row["unexpected"]:
        notes.append(f"{row['unexpected']} never sent")
    return notes


def failed_row(cell, error):
    return {**dataclasses.asdict(cell), "producer": cell.producer_label, "notes": [f"error: {error}"], "met": False}


def run(cells, seconds, warmup, drain, database=BENCH_DB, min_timed=0):
    import psycopg

    admin = os.environ.get("DATABASE_URL") or sys.exit("latency.py: set DATABASE_URL to a PostgreSQL server")
    url = with_db(admin, database)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {database}")
    try:
        setup_django(url)
        from django.core.management import call_command

        from queueing import topics

        call_command("migrate", verbosity=0)
        topics.create_topic(WARMUP_TOPIC, partitions=1)
        rows = []
        for number, cell in enumerate(cells, 1):
            print(f"[{number}/{len(cells)}] {cell.label}", file=sys.stderr, flush=True)
            try:
                # Long enough to time min_timed records: a p99 of 300 is their third largest, a
                # figure one stall moves; of 1,000 it is the tenth.
                rows.append(run_cell(url, cell, number, max(seconds, min_timed / cell.rate), warmup, drain))
            except CellFailed as error:
                rows.append(failed_row(cell, error))
        return rows
    finally:
        from django.db import connections

        connections.close_all()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


def print_table(rows):
    headers = ["path", "producer", "rate/s", "reached/s", "partitions", "consumer", "sent", "received", "lost",
               "dup", "timed", "p50 ms", "p99 ms", "max ms", f"> {MAX_MS} ms", "late wakeups", "goal", "met", "notes"]

    def number(row, field):
        return "-" if row.get(field) is None else f"{row[field]:,}"

    table = [[r["path"], r["producer"], f"{r['rate']:,}", number(r, "reached"), str(r["partitions"]), r["consumer"],
              number(r, "sent"), number(r, "received"), number(r, "lost"), number(r, "duplicates"),
              number(r, "records"), number(r, "p50_ms"), number(r, "p99_ms"), number(r, "max_ms"), number(r, "over_max"),
              number(r, "late_wakeups"),
              f"p99 <= {r.get('p99_goal_ms') or (15 if r['rate'] <= 1000 else 50)}, max <= {MAX_MS}",
              "yes" if r["met"] else "NO",
              "; ".join(r["notes"])] for r in rows]
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(headers)]
    for row in [headers, *table]:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="timed sending per cell (default 3)")
    parser.add_argument("--min-timed", type=int, default=1000,
                        help="a cell sends longer than --seconds if it must, to time this many records (default 1000)")
    parser.add_argument("--warmup", type=float, default=0.3,
                        help="seconds of sending before the timed part, counted for loss only (default 0.3)")
    parser.add_argument("--drain", type=float, default=5.0,
                        help="most seconds to wait for the last records after the senders stop (default 5)")
    parser.add_argument("--full", action="store_true", help="every producer x rate x partitions x consumer cell")
    parser.add_argument("--only", action="append", default=[], metavar="REGEX",
                        help="run only cells whose label matches (repeat: all must match); see --list")
    parser.add_argument("--list", action="store_true", help="print the cells' labels and exit")
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument("--database", default=BENCH_DB, help=f"the database it makes and drops (default {BENCH_DB})")
    args = parser.parse_args()
    cells = [c for c in all_cells(args.full) if all(re.search(p, c.label) for p in args.only)]
    if args.list:
        print("\n".join(c.label for c in cells))
        return
    if not cells or args.seconds <= 0 or args.min_timed < 0:
        parser.error("no cells to run" if not cells else "--seconds must be positive" if args.seconds <= 0
                     else "--min-timed must not be negative")
    began = time.monotonic()
    rows = run(cells, args.seconds, args.warmup, args.drain, args.database, args.min_timed)
    print(f"Delivery latency, {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores; {len(cells)} cells of "
          f"{args.seconds:g} s timed (at least {args.min_timed:,} records) after {args.warmup:g} s of warm-up, "
          f"poll fallback 1000 ms\n")
    print_table(rows)
    print(f"\n{len(cells)} cells in {time.monotonic() - began:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
