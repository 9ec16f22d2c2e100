"""Producer, consumer and scanner processes for the acceptance tests; each writes a history for checker.py.

    python tests/acceptance/agents.py produce NAME TOPIC --count M --log FILE [--pause S] [--batch-every K]
    python tests/acceptance/agents.py consume NAME TOPIC GROUP --log FILE --done FILE [--stall-after N]
    python tests/acceptance/agents.py scan NAME TOPIC --log FILE --done FILE

Django is set up from the environment (DATABASE_URL; SLUICE_APP_NAME names the connections so a test
can cut them). Every line is flushed and fsync'd before the agent acts on what it records: a send is
logged before it starts, a consumer's reads before it commits them, so a process killed with SIGKILL
leaves a history that is complete up to the moment it died. The line formats are in checker.py.
"""
import argparse
import json
import logging
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django  # noqa: E402

django.setup()

import psycopg  # noqa: E402
from django.db import InterfaceError, OperationalError, connection, transaction  # noqa: E402

from queueing import consumer, exceptions, models, producer, storage, topics  # noqa: E402
from queueing.loops import on_stop  # noqa: E402

# A cut connection surfaces as Django's errors, or as psycopg's from the LISTEN connection.
CONNECTION_ERRORS = (OperationalError, InterfaceError, psycopg.OperationalError, psycopg.InterfaceError)


class History:
    """An append-only event log: one line an event, on disk before the call returns."""

    def __init__(self, path):
        self.file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - open for the agent's lifetime

    def write(self, *fields):
        self.write_many([fields])

    def write_many(self, events):
        if not events:
            return
        self.file.write("".join(" ".join(str(f) for f in fields) + "\n" for fields in events))
        self.file.flush()
        os.fsync(self.file.fileno())


class Notes(logging.Handler):
    """Copies the engine's warnings (a send retried after a lost connection) into the history."""

    def __init__(self, history):
        super().__init__(logging.WARNING)
        self.history = history

    def emit(self, record):
        self.history.write("note", record.name, "-", record.getMessage().replace("\n", " "))


class Rollback(Exception):
    """Raised inside transaction.atomic() to roll a send back on purpose."""


def _value(ident, name, seq, key):
    return {"id": ident, "producer": name, "seq": seq, "key": key}


def produce(args):
    """Send --count records with an idempotent producer; some in transactions, some rolled back.

    Every tenth send goes in a transaction that is rolled back ("aborted", never to be read); every
    tenth another commits in a transaction; with --batch-every K every Kth step is a send_batch of
    --batch-size records (70 goes through COPY). Keys come from a small set, shared by producers.
    """
    history = History(args.log)
    logging.getLogger("sluice.producer").addHandler(Notes(history))
    sender = producer.Producer(idempotent=True, client_id=args.name)
    stop = threading.Event()
    seq = step = 0

    def ident_key(n):
        return f"{args.name}-{n}", f"key{n % args.keys}"

    with on_stop(stop.set):
        while seq < args.count and not stop.is_set():
            step += 1
            if args.batch_every and step % args.batch_every == 0:
                size = min(args.batch_size, args.count - seq)
                batch = [ident_key(n) for n in range(seq, seq + size)]
                history.write_many([("invoke", i, k) for i, k in batch])
                try:
                    sent = sender.send_batch(args.topic, [_value(i, args.name, seq + n, k) for n, (i, k) in
                                                          enumerate(batch)], keys=[k for _, k in batch])
                    history.write_many([("ok", i, m.partition, m.offset) for (i, _), m in zip(batch, sent)])
                except CONNECTION_ERRORS:
                    history.write_many([("fail", i) for i, _ in batch])
                    connection.close()
                seq += size
            elif step % 10 == 0:
                _send_aborted(history, args.topic, *ident_key(seq), args.name, seq)
                seq += 1
            else:
                _send_one(history, sender, args.topic, *ident_key(seq), args.name, seq, in_transaction=step % 10 == 5)
                seq += 1
            if args.pause:
                stop.wait(args.pause)
    history.write("done", args.name)


def _send_one(history, sender, topic, ident, key, name, seq, *, in_transaction):
    history.write("invoke", ident, key)
    try:
        if in_transaction:
            # The module's default producer: an idempotent producer's sequences live in memory, and
            # a transaction that fails to commit (a cut connection) would leave them ahead of the
            # database's, so its next send would be refused as out of order.
            with transaction.atomic():
                meta = producer.send(topic, _value(ident, name, seq, key), key=key)
        else:
            meta = sender.send(topic, _value(ident, name, seq, key), key=key)
    except CONNECTION_ERRORS:
        history.write("fail", ident)  # the outcome is unknown: the send may or may not be stored
        connection.close()
        return
    history.write("ok", ident, meta.partition, meta.offset)
    if meta.duplicate:
        history.write("note", "duplicate", ident)  # a retry the idempotent producer recognised


def _send_aborted(history, topic, ident, key, name, seq):
    # Logged first: whatever happens next (even a cut connection), this record was never committed.
    history.write("aborted", ident, key)
    try:
        with transaction.atomic():
            producer.send(topic, _value(ident, name, seq, key), key=key)
            raise Rollback
    except Rollback:
        pass
    except CONNECTION_ERRORS:
        connection.close()


def _ident(value):
    try:
        return json.loads(value)["id"]
    except (TypeError, ValueError, KeyError):
        return "?" + (value or b"").hex()[:40]


def _generation(group):
    return models.ConsumerGroup.objects.values_list("generation", flat=True).get(name=group)


def consume(args):
    """Be a member of GROUP: poll, log the reads (on disk), commit, and again.

    Exits once the --done file exists and nothing was read for --quiet seconds since it appeared,
    or on SIGTERM. With --stall-after N, once N records were read it logs half of its next batch,
    creates the --stalled file, and hangs without committing until it is killed.
    """
    history = History(args.log)
    stop = threading.Event()
    member = consumer.Consumer(
        args.group, [args.topic], auto_offset_reset="earliest", enable_auto_commit=False,
        max_poll_records=args.max_poll, client_id=args.name,
    )
    read, quiet_since, done_since = 0, time.monotonic(), None
    with on_stop(stop.set):
        while not stop.is_set():
            committing = False
            try:
                records = member.poll(timeout=0.3)
                generation, at = member.assignment.generation, f"{time.monotonic():.6f}"
                events = [("read", args.name, generation, r.partition, r.offset, _ident(r.value), at) for r in records]
                if args.stall_after and records and read + len(records) >= args.stall_after:
                    history.write_many(events[:max(1, len(events) // 2)])
                    Path(args.stalled).write_text(str(os.getpid()))
                    stop.wait()  # mid-batch, read but not committed: the test kills us here
                    break
                history.write_many(events)  # on disk before the commit that makes them consumed
                read += len(records)
                now = time.monotonic()
                if records:
                    quiet_since = now
                    committing = True
                    try:
                        member.commit()
                        history.write("commit", args.name, generation, "ok")
                    except exceptions.CommitFailed:
                        # The group moved on: the consumer re-syncs and reads from the committed offsets.
                        history.write("commit", args.name, generation, "refused")
                    committing = False
                    stop.wait(args.pause)  # a slow handler: the group keeps a backlog while faults hit it
                if done_since is None and os.path.exists(args.done):
                    done_since = now
                if done_since is not None and now - max(quiet_since, done_since) >= args.quiet:
                    if _generation(args.group) == generation:
                        break
                    # The group rebalanced and this member has not re-synced yet: it may own a
                    # partition now whose last batch nobody committed.
                    quiet_since = now
            except CONNECTION_ERRORS as error:
                if committing:
                    history.write("commit", args.name, generation, "unknown")
                history.write("rewind", args.name)
                history.write("note", "connection", "-", str(error).replace("\n", " ")[:200])
                connection.close()
                member.rewind()
                stop.wait(0.2)
    try:
        member.close(commit=False)
    except CONNECTION_ERRORS:
        pass  # the session times out instead of leaving now
    history.write("done", args.name)


def scan(args):
    """Read one partition over and over while producers append, and log what a late commit would break.

    Each pass reads (1) the whole partition in one statement: the offsets visible must be 0..n-1 with
    n never shrinking, and (2) the tail from its last position with the engine's own range read,
    logging every record as a "read": a record that shows up behind the position is a late commit,
    which the checker then reports as a skip of that reader. After the --done file appears, one
    last pass, then exit.
    """
    history = History(args.log)
    info = topics.get_topic(args.topic)
    slot = (info.id, args.partition)
    position = visible = passes = 0
    stop = threading.Event()
    with on_stop(stop.set):
        while not stop.is_set():
            last = os.path.exists(args.done)
            with connection.cursor() as cursor:
                cursor.execute(
                    'SELECT count(*), coalesce(min("offset"), 0), coalesce(max("offset"), -1) FROM queueing_record'
                    " WHERE topic_id = %s AND partition = %s",
                    [info.id, args.partition],
                )
                count, low, high = cursor.fetchone()
            if count != high + 1 or low != 0:
                history.write("late", "snapshot-not-a-prefix", f"count={count}", f"min={low}", f"max={high}")
            if count < visible:
                history.write("late", "snapshot-shrank", f"from={visible}", f"to={count}")
            if count != visible:
                history.write("snapshot", count)
            visible = max(visible, count)
            rows = storage.fetch_records(positions={slot: position}, per_partition=1000)
            if rows and [row[2] for row in rows] != list(range(position, position + len(rows))):
                history.write("late", "tail-gap", f"position={position}", f"first={rows[0][2]}")
            if rows:
                history.write_many(
                    [("read", args.name, 0, args.partition, row[2], _ident(row[4])) for row in rows]
                    + [("commit", args.name, 0, "ok")]
                )
                position = rows[-1][2] + 1
            passes += 1
            if last:
                break
            stop.wait(0.005)
    history.write("scanned", passes, visible, position)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("produce")
    p.add_argument("name")
    p.add_argument("topic")
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--keys", type=int, default=8)
    p.add_argument("--pause", type=float, default=0.0, help="seconds between sends")
    p.add_argument("--batch-every", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=5)
    c = commands.add_parser("consume")
    c.add_argument("name")
    c.add_argument("topic")
    c.add_argument("group")
    c.add_argument("--log", required=True)
    c.add_argument("--done", required=True)
    c.add_argument("--quiet", type=float, default=2.0)
    c.add_argument("--max-poll", type=int, default=50)
    c.add_argument("--pause", type=float, default=0.0, help="seconds spent on each batch")
    c.add_argument("--stall-after", type=int, default=0)
    c.add_argument("--stalled")
    s = commands.add_parser("scan")
    s.add_argument("name")
    s.add_argument("topic")
    s.add_argument("--partition", type=int, default=0)
    s.add_argument("--log", required=True)
    s.add_argument("--done", required=True)
    args = parser.parse_args(argv)
    {"produce": produce, "consume": consume, "scan": scan}[args.command](args)


if __name__ == "__main__":
    main()
