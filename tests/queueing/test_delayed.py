import datetime
import importlib
import random
import signal
import statistics
import subprocess
import sys
import threading
import time

import pytest
from django.db import connection, transaction
from django.utils import timezone

from queueing import consumer, delayed, exceptions, models, partitioner, producer, topics, types
from tests.conftest import ROOT, ends_at_stop


def make_due(ids=None):
    with connection.cursor() as cursor:
        cursor.execute("UPDATE queueing_delayedrecord SET deliver_at = now() - interval '1 second'"
                       + ("" if ids is None else " WHERE id = ANY(%s)"), [] if ids is None else [list(ids)])


def log(topic):
    info = topics.get_topic(topic)
    return list(models.Record.objects.filter(topic_id=info.id).order_by("partition", "offset"))


def test_a_delayed_send_waits_and_enters_the_log_when_due(db, topic):
    sent = producer.send(topic.name, {"n": 1}, key="k", delay=3600, headers={"h": "1"})
    assert isinstance(sent, types.DelayedMetadata)
    assert delayed.move_due() == 0 and log(topic.name) == []
    make_due()
    assert delayed.move_due() == 1
    [record] = log(topic.name)
    assert record.partition == partitioner.partition_for_key(b"k", 3)
    assert record.value_format == types.ValueFormat.JSON and record.headers["h"] == "1"
    assert record.headers[types.DELAYED_ID] == str(sent.id)
    assert not models.DelayedRecord.objects.exists()


def test_a_keyed_record_is_placed_over_the_partitions_its_topic_has_when_it_is_due(db, topic):
    # Kafka places a record when it is produced; a delayed one is produced when due, so partitions
    # added while it waits count, as they do for a record sent by hand at that moment.
    keys = [f"key-{n}".encode() for n in range(40)]
    sent = producer.send_batch(topic.name, [b"v"] * len(keys), keys=keys, delay=3600)
    unkeyed = producer.send(topic.name, b"unkeyed", delay=3600)
    pinned = producer.send(topic.name, b"pinned", key="k", partition=2, delay=3600)
    topics.alter_topic(topic.name, partitions=7)
    make_due()
    due = {str(row.id): row.deliver_at for row in models.DelayedRecord.objects.all()}
    assert delayed.move_due() == len(keys) + 2
    records = log(topic.name)
    placed = {bytes(r.key): r.partition for r in records if r.value_format == types.ValueFormat.BYTES
              and bytes(r.value) == b"v"}
    assert placed == {key: partitioner.partition_for_key(key, 7) for key in keys}
    assert any(partitioner.partition_for_key(key, 7) != partitioner.partition_for_key(key, 3) for key in keys)
    by_id = {r.headers[types.DELAYED_ID]: r for r in records}
    assert by_id[str(unkeyed.id)].partition < 3 and by_id[str(pinned.id)].partition == 2
    assert {r.headers[types.DELAYED_ID]: datetime.datetime.fromisoformat(r.headers[types.DELAYED_DELIVER_AT])
            for r in records} == due
    assert {str(s.id) for s in sent} <= set(due)


def test_due_records_move_in_time_order_with_dense_offsets(db, topic):
    now = timezone.now()
    for seconds in (30, 10, 20):
        producer.send(topic.name, str(seconds).encode(), partition=1, deliver_at=now + datetime.timedelta(seconds=seconds))
    make_due()
    with connection.cursor() as cursor:  # keep their relative order while making them all due
        cursor.execute("UPDATE queueing_delayedrecord SET deliver_at = now() - interval '1 minute' "
                       "+ convert_from(value, 'UTF8')::int * interval '1 second'")
    assert delayed.move_due(limit=2) == 2 and delayed.move_due() == 1
    assert [(r.offset, bytes(r.value)) for r in log(topic.name)] == [(0, b"10"), (1, b"20"), (2, b"30")]


@pytest.mark.parametrize("when,message", [
    ({"delay": 0}, "positive"), ({"delay": -5}, "positive"), ({"delay": "soon"}, "positive"),
    ({"delay": 367 * 86400}, "a year at most"), ({"delay_level": 19}, "1 to 18"), ({"delay_level": 0}, "1 to 18"),
    ({"deliver_at": datetime.datetime(2030, 1, 1)}, "timezone-aware"),
    ({"delay": 5, "delay_level": 2}, "exactly one"),
])
def test_bad_delays_are_refused_and_nothing_is_stored(db, topic, when, message):
    with pytest.raises(exceptions.InvalidArgument, match=message):
        producer.send(topic.name, b"x", **when)
    assert not models.DelayedRecord.objects.exists()


def test_rocketmq_delay_levels(db, topic):
    before = timezone.now()
    sent = producer.send(topic.name, b"x", delay_level=3)
    assert datetime.timedelta(seconds=9) < sent.deliver_at - before < datetime.timedelta(seconds=11)
    assert delayed.DELAY_LEVELS[-1] == 7200 and len(delayed.DELAY_LEVELS) == 18


def test_a_delayed_send_rolls_back_with_the_callers_transaction(db, topic):
    with pytest.raises(RuntimeError):
        with transaction.atomic():
            producer.send(topic.name, b"x", delay=10)
            raise RuntimeError
    assert not models.DelayedRecord.objects.exists()


def test_cancel_and_reschedule(db, topic):
    first = producer.send(topic.name, b"a", delay=60)
    second = producer.send(topic.name, b"b", delay=60)
    delayed.cancel(first.id)
    with pytest.raises(exceptions.DelayedRecordNotFound):
        delayed.cancel(first.id)
    due = delayed.reschedule(second.id, delay=7200)
    assert models.DelayedRecord.objects.get(id=second.id).deliver_at == due
    with pytest.raises(exceptions.DelayedRecordNotFound):
        delayed.reschedule(first.id, delay=5)
    make_due()
    delayed.move_due()
    assert [bytes(r.value) for r in log(topic.name)] == [b"b"]


def test_an_oversized_delayed_record_is_refused(db):
    topics.create_topic("small", max_message_bytes=4)
    with pytest.raises(exceptions.MessageTooLarge):
        producer.send("small", b"12345", delay=5)


@pytest.mark.django_db(transaction=True)
def test_two_movers_never_move_a_record_twice():
    topics.create_topic("movers", partitions=2)
    producer.send_batch("movers", [str(i).encode() for i in range(600)], delay=3600)
    make_due()
    errors = []

    def run():
        try:
            while delayed.move_due(limit=25):
                pass
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    values = sorted(int(bytes(r.value)) for r in log("movers"))
    assert values == list(range(600))
    for partition in (0, 1):
        offsets = [r.offset for r in log("movers") if r.partition == partition]
        assert offsets == list(range(len(offsets)))


@pytest.mark.django_db(transaction=True)
def test_thousands_of_random_delays_are_never_early_and_arrive_promptly(settings, process_env):
    """Random delays up to 3 s; a mover runs beside a consumer. Lateness is printed, not asserted
    (the machine is shared): the bound checked is only that everything arrives."""
    settings.SLUICE = {**settings.SLUICE, "POLL_FALLBACK_MS": 200}
    topics.create_topic("timers", partitions=2)
    count, rng = 2000, random.Random(11)
    # The mover runs as it does in production: `manage.py delayed run`, a process of its own.
    mover = subprocess.Popen([sys.executable, str(ROOT / "manage.py"), "delayed", "run"],
                             env={**process_env, "SLUICE_POLL_FALLBACK_MS": "200"}, stderr=subprocess.PIPE, text=True)
    # Due from 2 s on, so that scheduling them all is done before the first is due.
    base = timezone.now() + datetime.timedelta(seconds=2)
    for start in range(0, count, 200):
        with transaction.atomic():
            for i in range(start, start + 200):
                producer.send("timers", str(i).encode(), key=str(i),
                              deliver_at=base + datetime.timedelta(seconds=rng.uniform(0.0, 3.0)))
    lateness, early, moved = [], [], []
    try:
        with consumer.Consumer("timers", ["timers"], auto_offset_reset="earliest") as member:
            deadline = timezone.now() + datetime.timedelta(seconds=30)
            while len(lateness) < count and timezone.now() < deadline:
                for record in member.poll(timeout=0.5):
                    seen = timezone.now()
                    due = datetime.datetime.fromisoformat(record.headers[types.DELAYED_DELIVER_AT])
                    if record.timestamp < due or seen < due:
                        early.append(record.offset)
                    lateness.append((seen - due).total_seconds())
                    moved.append((record.timestamp - due).total_seconds())
    finally:
        mover.send_signal(signal.SIGTERM)
        _, err = mover.communicate(timeout=30)
    assert mover.returncode == 0, err
    assert early == []
    assert len(lateness) == count
    quantiles = statistics.quantiles(lateness, n=100)
    print(f"\ndelayed lateness over {count} records: p50 {quantiles[49] * 1000:.0f} ms, "
          f"p99 {quantiles[98] * 1000:.0f} ms, max {max(lateness) * 1000:.0f} ms; into the log: "
          f"p50 {statistics.median(moved) * 1000:.0f} ms, p99 {statistics.quantiles(moved, n=100)[98] * 1000:.0f} ms")


@pytest.mark.django_db(transaction=True)
def test_the_mover_is_woken_by_a_sooner_record_and_not_by_a_later_one():
    # While the mover waits every delayed send NOTIFYs; a mover woken by each would look at the
    # table once a send.
    from queueing import storage, wakeups

    topics.create_topic("wake-up", partitions=1)
    mover = delayed.Mover(fallback=60)
    mover.listener = wakeups.listen_connection([delayed.CHANNEL])
    try:
        assert storage.ask_for_wakeups(mover.listener, space=wakeups.DELAYS, keys=delayed.STRIPES) == set()
        earliest = producer.send("wake-up", b"first", delay=30).deliver_at
        producer.send("wake-up", b"later", delay=60)
        assert mover._sooner_scheduled(earliest, time.monotonic() + 0.3) is False  # both notices seen
        producer.send("wake-up", b"sooner", delay=10)
        assert mover._sooner_scheduled(earliest, time.monotonic() + 30) is True
    finally:
        mover.listener.close()


@pytest.mark.django_db(transaction=True)
def test_a_delayed_send_notifies_only_while_a_mover_waits():
    """A NOTIFY makes committing transactions queue behind each other: with the mover busy (it
    asks for none), delayed sends commit without one; once it waits, they wake it."""
    from queueing import wakeups

    topics.create_topic("quiet", partitions=1)
    listener = wakeups.listen_connection([delayed.CHANNEL])
    mover = delayed.Mover(fallback=60)
    mover.listener = listener
    try:
        producer.send("quiet", b"unheard", delay=30)
        assert not wakeups.heard(listener, 0.3)
        mover.run_once()  # nothing due; it knows the record due in 30 s
        assert mover._waiter.sleep(listener, delayed.STRIPES, 5, lambda s: False) is False  # asked: look again
        producer.send("quiet", b"sooner", delay=10)
        assert wakeups.heard(listener, 5)
    finally:
        listener.close()


@pytest.mark.django_db(transaction=True)
def test_stop_ends_a_movers_sleep_on_listen_at_once():
    """A mover thread asleep on LISTEN with a long fallback ends soon after stop(): a kombu
    transport closing waits for its mover thread, and a lingering one keeps its connections."""
    topics.create_topic("stopping", partitions=1)
    mover = delayed.Mover(fallback=60)
    assert ends_at_stop(threading.Thread(target=mover.run), lambda: mover._waiter.asking, mover.stop)


def test_a_move_says_when_the_next_record_is_due(db, topic):
    """The mover sleeps on what its last move said, without asking again: the claim's snapshot
    still holds the records it took, and they must not count as the next one."""
    first = producer.send(topic.name, b"first", delay=30)
    later = producer.send(topic.name, b"later", delay=60).deliver_at
    make_due([first.id])
    moved, due, earliest = delayed._move(500)
    assert moved == 1 and earliest == later and 55 < due - time.monotonic() <= 60
    assert delayed._move(500)[:1] == (0,) and delayed._move(500)[2] == later
    make_due()
    assert delayed._move(500) == (1, None, None)


def test_the_migration_gives_records_waiting_from_before_their_keys_hash(db, topic):
    from django.apps import apps
    migration = importlib.import_module("queueing.migrations.0007_delayed_key_hash")
    producer.send(topic.name, b"v", key="old", delay=3600)
    producer.send(topic.name, b"v", key="pinned", partition=1, delay=3600)
    models.DelayedRecord.objects.update(key_hash=None)  # as a process older than the column wrote them
    migration.hash_waiting_keys(apps, None)
    assert dict(models.DelayedRecord.objects.values_list("partition", "key_hash")) == {
        None: partitioner.murmur2(b"old"), 1: None}
