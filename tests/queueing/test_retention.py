import datetime
import threading
import time

import pytest
from django.db import connection

from queueing import consumer, exceptions, groups, models, producer, retention, topics, wakeups
from queueing.storage import retention as storage

DAY = datetime.timedelta(days=1)


def age(topic, offsets, *, hours=None, at=None):
    """Move records back in time (their timestamps are the database's, not the test's); the table
    moves each row into the segment (or the default partition) of its new time."""
    info = topics.get_topic(topic)
    with connection.cursor() as cursor:
        if at is not None:
            cursor.execute('UPDATE queueing_record SET "timestamp" = %s WHERE topic_id = %s AND "offset" = ANY(%s)',
                           [at, info.id, list(offsets)])
        else:
            cursor.execute('UPDATE queueing_record SET "timestamp" = now() - %s * interval \'1 hour\' '
                           'WHERE topic_id = %s AND "offset" = ANY(%s)', [hours, info.id, list(offsets)])


def bounds(topic, partition=0):
    part = models.Partition.objects.get(topic__name=topic, number=partition)
    return part.log_start_offset, part.next_offset, part.size_bytes


def stored(topic):
    """Offsets physically in the table, below the log start or not."""
    return sorted(models.Record.objects.filter(topic_id=topics.get_topic(topic).id).values_list("offset", flat=True))


def old_segment(day):
    """A closed segment of one day long ago, as a long-running install would have."""
    start = datetime.datetime(2001, 1, day, tzinfo=datetime.UTC)
    name = retention.segment_name(start)
    storage.create_segment(name, start, start + DAY)
    return name, start


def table_count(name):
    with connection.cursor() as cursor:
        cursor.execute(f'SELECT count(*) FROM "{name}"')
        return cursor.fetchone()[0]


def segment_tables():
    with connection.cursor() as cursor:
        cursor.execute("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                       "WHERE i.inhparent = 'queueing_record'::regclass")
        return {row[0] for row in cursor.fetchall()}


def test_time_retention_moves_the_log_start(db):
    topics.create_topic("short", retention_ms=3600_000)
    producer.send_batch("short", [b"x" * 10] * 5, partition=0)
    age("short", [0, 1, 2], hours=2)
    assert retention.apply_retention() == 1
    assert bounds("short") == (3, 5, 20)
    assert retention.apply_retention() == 0  # nothing more to move


def test_the_segment_appends_go_to_keeps_its_expired_records(db):
    """Guards the hot table against dead tuples: nothing is deleted from the current segment;
    its expired records wait, unseen, for the segment to close and be dropped."""
    topics.create_topic("tiny", retention_bytes=10)
    producer.send_batch("tiny", [b"x" * 10] * 5, partition=0)
    retention.apply_retention()
    assert bounds("tiny") == (4, 5, 10)
    assert retention.reclaim() == (0, 0, False)
    assert stored("tiny") == [0, 1, 2, 3, 4]


def test_records_below_the_log_start_are_never_fetched(db):
    from queueing import storage as log

    topics.create_topic("short", retention_ms=3600_000)
    producer.send_batch("short", [str(i).encode() for i in range(5)], partition=0)
    age("short", [0, 1], hours=2)
    retention.apply_retention()
    info = topics.get_topic("short")
    assert [row[2] for row in log.fetch_records(positions={(info.id, 0): 0}, per_partition=10)] == [2, 3, 4]


def test_size_retention_keeps_the_newest_bytes(db):
    topics.create_topic("small", retention_bytes=250)
    producer.send_batch("small", [b"x" * 100] * 5, partition=0)
    assert retention.apply_retention() == 1
    assert bounds("small") == (3, 5, 200)
    producer.send_batch("small", [b"y" * 30] * 2, partition=0)
    retention.apply_retention()
    assert bounds("small") == (4, 7, 160)  # dropping 3 is enough: 100 + 60 fits in 250


def test_time_and_size_retention_together(db):
    topics.create_topic("both", retention_ms=3600_000, retention_bytes=150)
    producer.send_batch("both", [b"z" * 50] * 6, partition=0)
    age("both", [0], hours=2)
    retention.apply_retention()
    assert bounds("both") == (3, 6, 150)


def test_a_consumer_behind_the_log_start_resets_to_earliest(db):
    topics.create_topic("short", retention_ms=3600_000)
    producer.send_batch("short", [str(i).encode() for i in range(5)], partition=0)
    with consumer.Consumer("early", ["short"], auto_offset_reset="earliest") as member:
        assert [r.offset for r in member.poll(timeout=0, max_records=1)] == [0]
        age("short", [0, 1, 2, 3], hours=2)
        retention.apply_retention()
        # Its position (1) is now below the log start (4): the first offset fetched is past it.
        assert [r.value for r in member.poll(timeout=0.2)] == [b"4"]


def test_a_committed_offset_behind_the_log_start_resets_to_latest(db):
    topics.create_topic("short", retention_ms=3600_000)
    producer.send_batch("short", [str(i).encode() for i in range(5)], partition=0)
    with consumer.Consumer("late", ["short"], auto_offset_reset="earliest") as member:
        assert len(member.poll(timeout=0, max_records=1)) == 1
        member.commit()
    age("short", [0, 1, 2, 3], hours=2)
    retention.apply_retention()
    with consumer.Consumer("late", ["short"], auto_offset_reset="latest") as member:
        assert member.poll(timeout=0) == []  # offset 1 is gone: latest means the log end
        producer.send("short", b"5", partition=0)
        assert [r.value for r in member.poll(timeout=0.2)] == [b"5"]


def test_compacted_topic_gaps_are_normal_but_the_log_start_still_resets(db):
    topics.create_topic("state", cleanup_policy="compact", retention_ms=3600_000)
    for key in ["a", "b", "a", "c", "b"]:
        producer.send("state", key.encode(), key=key, partition=0)
    with consumer.Consumer("reader", ["state"], auto_offset_reset="latest") as member:
        assert member.poll(timeout=0) == []  # joined at the log end
        member.seek(types_tp("state"), 0)
        assert [r.offset for r in member.poll(timeout=0, max_records=1)] == [0]
        age("state", [0, 1, 2, 3], hours=2)
        retention.apply_retention()
        # Behind the log start on a compacted topic: not a compaction gap, so latest applies.
        assert member.poll(timeout=0) == []
        assert member.positions()[types_tp("state")] == 5


def types_tp(topic, partition=0):
    from queueing import types

    return types.TopicPartition(topic=topic, partition=partition)


@pytest.mark.django_db(transaction=True)
def test_an_old_segment_is_dropped_whole_while_a_producer_appends():
    topics.create_topic("old", retention_ms=3600_000)
    name, start = old_segment(1)
    producer.send_batch("old", [b"a"] * 3, partition=0)
    age("old", [0, 1, 2], at=start)
    retention.apply_retention()
    assert bounds("old")[0] == 3
    assert name in segment_tables()
    sent, started, errors = [], threading.Event(), []

    def produce():
        try:
            for _ in range(300):
                sent.append(producer.send("old", b"new", partition=0).offset)
                started.set()
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)
        finally:
            started.set()
            connection.close()

    thread = threading.Thread(target=produce)
    thread.start()
    started.wait(10)
    before = segment_tables()
    # Run close to midnight UTC, yesterday's segment has just closed and, holding nothing needed,
    # goes too: only segments already closed may, never the one appends go to.
    closed = {n for n, _, end in storage.segments() if end <= groups.db_now()}
    dropped = 0
    for _ in range(5):  # a drop that meets its lock timeout under load tries again at the next pass
        dropped += retention.reclaim()[0]
        if name not in segment_tables():
            break
    thread.join(timeout=60)
    assert not thread.is_alive() and errors == []
    gone = before - segment_tables()
    assert name in gone and gone <= closed and dropped == len(gone)
    assert sent == list(range(3, 303))  # every send completed, dense, while the segment went
    assert stored("old") == list(range(3, 303))


@pytest.mark.django_db(transaction=True)
def test_a_shared_old_segment_loses_only_expired_records_in_batches():
    topics.create_topic("brief", retention_ms=3600_000)
    topics.create_topic("forever")
    name, start = old_segment(2)
    producer.send_batch("brief", [b"b"] * 5, partition=0)
    producer.send_batch("forever", [b"f"] * 2, partition=0)
    age("brief", range(5), at=start)
    age("forever", range(2), at=start)
    retention.apply_retention()
    assert bounds("brief")[0] == 5 and bounds("forever")[0] == 0
    assert retention.reclaim(batch=2, budget=2) == (0, 4, True)  # the budget ran out: more to do
    assert retention.reclaim(batch=2, budget=2) == (0, 1, False)
    assert name in segment_tables()
    assert table_count(name) == 2  # the forever topic's records stay
    assert stored("brief") == []


@pytest.mark.django_db(transaction=True)
def test_expired_records_in_the_default_partition_are_deleted():
    topics.create_topic("stray", retention_ms=3600_000)
    producer.send_batch("stray", [b"s"] * 3, partition=0)
    age("stray", range(3), at=datetime.datetime(1999, 6, 1, tzinfo=datetime.UTC))  # no segment: the default
    assert table_count(storage.DEFAULT) == 3
    retention.apply_retention()
    assert retention.reclaim()[1] == 3
    assert table_count(storage.DEFAULT) == 0


def test_compaction_keeps_the_newest_record_per_key_and_then_drops_tombstones(db, settings):
    settings.SLUICE = {**settings.SLUICE, "TOMBSTONE_RETENTION_MS": 30 * 24 * 3600 * 1000}
    topics.create_topic("state", cleanup_policy="compact")
    for key, value in [("a", b"1"), ("b", b"1"), ("a", b"2"), ("c", b"1"), ("b", b"2"), ("c", None)]:
        producer.send("state", value, key=key, partition=0)
    age("state", range(6), hours=48)  # closed segments: the one appends go to is never compacted
    for key, value in [("d", b"1"), ("d", b"2")]:
        producer.send("state", value, key=key, partition=0)
    size = bounds("state")[2]
    assert retention.compact() == 3
    kept = {(r.offset, bytes(r.key), None if r.value is None else bytes(r.value)) for r in models.Record.objects.all()}
    assert kept == {(2, b"a", b"2"), (4, b"b", b"2"), (5, b"c", None), (6, b"d", b"1"), (7, b"d", b"2")}
    assert bounds("state")[2] == size - 6  # three records of 1-byte key and 1-byte value
    with consumer.Consumer("reader", ["state"], auto_offset_reset="earliest") as member:
        records = member.poll(timeout=0.2)
    assert [r.offset for r in records] == [2, 4, 5, 6, 7]  # gaps are normal on a compacted topic
    assert records[2].value is None  # the tombstone is delivered
    assert retention.compact() == 0
    settings.SLUICE = {**settings.SLUICE, "TOMBSTONE_RETENTION_MS": 0}
    assert retention.compact() == 1
    assert not models.Record.objects.filter(value__isnull=True).exists()


def test_a_tombstone_never_outlives_an_older_value_of_its_key(db, settings):
    """Guards compaction against resurrecting a key: a tombstone whose transaction started early
    has an older timestamp than the value before it; it stays while that value is in the hot segment."""
    settings.SLUICE = {**settings.SLUICE, "TOMBSTONE_RETENTION_MS": 0}
    topics.create_topic("state", cleanup_policy="compact")
    producer.send("state", b"1", key="e", partition=0)
    producer.send("state", None, key="e", partition=0)
    age("state", [1], hours=48)
    assert retention.compact() == 0
    assert stored("state") == [0, 1]


def test_a_compacted_topic_refuses_keyless_records(db):
    topics.create_topic("state", cleanup_policy="compact")
    with pytest.raises(exceptions.InvalidArgument, match="needs a key"):
        producer.send("state", b"v")
    with pytest.raises(exceptions.InvalidArgument, match="needs a key"):
        producer.send_batch("state", [b"v", b"w"], keys=["k", None])
    with pytest.raises(exceptions.InvalidArgument):
        topics.create_topic("weird", cleanup_policy="archive")
    assert topics.alter_topic("state", cleanup_policy="delete").cleanup_policy == "delete"
    producer.Producer().send("state", b"v")


def test_segments_are_made_ahead_and_never_overlap(db, settings):
    later = retention.groups.db_now() + 30 * DAY
    assert retention.ensure_segments(later) == retention.AHEAD + 1
    assert retention.ensure_segments(later) == 0
    settings.SLUICE = {**settings.SLUICE, "SEGMENT_MS": 7 * 3600 * 1000}  # a new span, unaligned with the old
    retention.ensure_segments(later)
    spans = storage.segments()
    assert all(a[2] <= b[1] for a, b in zip(spans, spans[1:]))
    assert any(start <= later < end for _, start, end in spans)


def test_only_one_pass_runs_at_a_time(db):
    holder = wakeups.listen_connection([])
    try:
        holder.execute("SELECT pg_advisory_lock(hashtext('sluice.retention'))")
        assert retention.run_pass().skipped
        # Unlocked explicitly: a closed connection's backend may outlive close() for a moment.
        holder.execute("SELECT pg_advisory_unlock(hashtext('sluice.retention'))")
    finally:
        holder.close()
    assert not retention.run_pass().skipped


@pytest.mark.django_db(transaction=True)
def test_the_loop_runs_passes_until_stopped():
    topics.create_topic("loop.short", retention_ms=1000)
    producer.send_batch("loop.short", [b"x"] * 2, partition=0)
    age("loop.short", [0, 1], hours=1)
    loop = retention.Retainer(interval=0.05)
    thread = threading.Thread(target=loop.run)
    thread.start()
    deadline = time.monotonic() + 10
    while bounds("loop.short")[0] != 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    loop.stop()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert bounds("loop.short")[0] == 2


@pytest.mark.django_db(transaction=True)
def test_the_retention_command(manage):
    topics.create_topic("cmd.short", retention_ms=1000)
    producer.send_batch("cmd.short", [b"x"] * 3, partition=0)
    age("cmd.short", [0, 1, 2], hours=1)
    result = manage("retention", "once")
    assert result.returncode == 0, result.stderr
    assert "log starts moved: 1" in result.stdout
    assert bounds("cmd.short")[0] == 3
    described = manage("topics", "describe", "cmd.short")
    assert described.returncode == 0, described.stderr
    row = described.stdout.splitlines()[-1].split()
    assert row[:3] == ["0", "3", "3"]  # PARTITION, LOG-START-OFFSET, LOG-END-OFFSET
    assert manage("retention", "sometimes").returncode == 2


@pytest.mark.django_db(transaction=True)
def test_topics_create_and_alter_take_a_cleanup_policy(manage):
    assert manage("topics", "create", "cmd.state", "--cleanup-policy", "compact").returncode == 0
    assert topics.get_topic("cmd.state").cleanup_policy == "compact"
    assert manage("topics", "alter", "cmd.state", "--cleanup-policy", "delete").returncode == 0
    topics.forget_topic("cmd.state")
    assert topics.get_topic("cmd.state").cleanup_policy == "delete"
    assert "CleanupPolicy: delete" in manage("topics", "describe", "cmd.state").stdout
    assert manage("topics", "alter", "cmd.state", "--cleanup-policy", "archive").returncode == 2
