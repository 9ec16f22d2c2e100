import datetime
import threading

import pytest
from django.db import connection

from queueing import consumer, exceptions, models, producer, retention, topics
from queueing.storage import retention as storage


def age(topic, offsets, hours):
    """Move records back in time (the log's timestamps are set by the database, not the test)."""
    info = topics.get_topic(topic)
    with connection.cursor() as cursor:
        cursor.execute('UPDATE queueing_record SET "timestamp" = now() - %s * interval \'1 hour\' '
                       'WHERE topic_id = %s AND "offset" = ANY(%s)', [hours, info.id, list(offsets)])


def bounds(topic, partition=0):
    part = models.Partition.objects.get(topic__name=topic, number=partition)
    return part.log_start_offset, part.next_offset, part.size_bytes


def test_time_retention_moves_the_log_start(db):
    topics.create_topic("short", retention_ms=3600_000)
    producer.send_batch("short", [b"x" * 10] * 5, partition=0)
    age("short", [0, 1, 2], hours=2)
    assert retention.apply_retention() == 1
    assert bounds("short") == (3, 5, 20)
    assert retention.apply_retention() == 0  # nothing more to move


def test_size_retention_keeps_the_newest_bytes(db):
    topics.create_topic("small", retention_bytes=250)
    producer.send_batch("small", [b"x" * 100] * 5, partition=0)
    retention.apply_retention()
    assert bounds("small") == (3, 5, 200)


def test_consumers_behind_the_log_start_follow_their_reset_policy(db):
    topics.create_topic("short", retention_ms=3600_000)
    producer.send_batch("short", [str(i).encode() for i in range(5)], partition=0)
    with consumer.Consumer("early", ["short"], auto_offset_reset="earliest") as member:
        first = member.poll(timeout=0, max_records=1)
        assert [r.offset for r in first] == [0]
        age("short", [0, 1, 2, 3], hours=2)
        retention.apply_retention()
        assert [r.value for r in member.poll(timeout=0.2)] == [b"4"]  # 1-3 are gone: it jumps to the start
    with consumer.Consumer("fresh", ["short"], auto_offset_reset="earliest") as member:
        assert [r.offset for r in member.poll(timeout=0.2)] == [4]


@pytest.mark.django_db(transaction=True)
def test_an_old_segment_is_dropped_whole_while_producers_append():
    topics.create_topic("old", retention_ms=3600_000)
    start = datetime.datetime(2001, 1, 1, tzinfo=datetime.UTC)
    storage.create_segment("queueing_record_s20010101000000", start, start + datetime.timedelta(days=1))
    producer.send_batch("old", [b"a"] * 3, partition=0)
    with connection.cursor() as cursor:
        cursor.execute('UPDATE queueing_record SET "timestamp" = %s WHERE "offset" < 3', [start])
    retention.apply_retention()
    assert bounds("old")[0] == 3
    sent, stop = [], threading.Event()

    def produce():
        try:
            while not stop.is_set() and len(sent) < 500:
                sent.append(producer.send("old", b"new", partition=0).offset)
        finally:
            connection.close()

    thread = threading.Thread(target=produce)
    thread.start()
    try:
        dropped, _ = retention.reclaim()
    finally:
        stop.set()
        thread.join(timeout=30)
    assert dropped == 1
    assert "queueing_record_s20010101000000" not in {name for name, _, _ in storage.segments()}
    assert sent == list(range(3, 3 + len(sent)))  # appends went on, dense


@pytest.mark.django_db(transaction=True)
def test_a_shared_old_segment_loses_only_expired_rows():
    topics.create_topic("brief", retention_ms=3600_000)
    topics.create_topic("forever")
    start = datetime.datetime(2002, 1, 1, tzinfo=datetime.UTC)
    storage.create_segment("queueing_record_s20020101000000", start, start + datetime.timedelta(days=1))
    producer.send_batch("brief", [b"b"] * 2, partition=0)
    producer.send_batch("forever", [b"f"] * 2, partition=0)
    with connection.cursor() as cursor:
        cursor.execute('UPDATE queueing_record SET "timestamp" = %s', [start])
    retention.apply_retention()
    dropped, deleted = retention.reclaim()
    assert (dropped, deleted) == (0, 2)
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM queueing_record_s20020101000000")
        assert cursor.fetchone()[0] == 2  # the forever topic's records stay


def test_compaction_keeps_the_newest_record_per_key_and_then_drops_tombstones(db, settings):
    topics.create_topic("state", cleanup_policy="compact")
    for key, value in [("a", b"1"), ("b", b"1"), ("a", b"2"), ("c", b"1"), ("b", b"2"), ("c", None)]:
        producer.send("state", value, key=key, partition=0)
    assert retention.compact() == 3
    kept = {(bytes(r.key), None if r.value is None else bytes(r.value)) for r in models.Record.objects.all()}
    assert kept == {(b"a", b"2"), (b"b", b"2"), (b"c", None)}
    with consumer.Consumer("reader", ["state"], auto_offset_reset="earliest") as member:
        records = member.poll(timeout=0.2)
    assert [r.offset for r in records] == [2, 4, 5]  # gaps are normal on a compacted topic
    assert records[-1].value is None  # the tombstone is delivered
    settings.SLUICE = {**settings.SLUICE, "TOMBSTONE_RETENTION_MS": 0}
    assert retention.compact() == 1
    assert not models.Record.objects.filter(value__isnull=True).exists()


def test_a_compacted_topic_refuses_keyless_records(db):
    topics.create_topic("state", cleanup_policy="compact")
    with pytest.raises(exceptions.InvalidArgument, match="needs a key"):
        producer.send("state", b"v")
    with pytest.raises(exceptions.InvalidArgument):
        topics.create_topic("weird", cleanup_policy="archive")


def test_segments_are_made_ahead_of_time(db):
    now = datetime.datetime.now(datetime.UTC)
    retention.ensure_segments(now + datetime.timedelta(days=30))
    later = [s for _, s, e in storage.segments() if s <= now + datetime.timedelta(days=30) < e]
    assert later


@pytest.mark.django_db(transaction=True)
def test_the_retention_command(manage):
    topics.create_topic("cmd.short", retention_ms=1000)
    producer.send_batch("cmd.short", [b"x"] * 3, partition=0)
    age("cmd.short", [0, 1, 2], hours=1)
    result = manage("retention", "once")
    assert result.returncode == 0, result.stderr
    assert "log starts moved: 1" in result.stdout
    assert bounds("cmd.short")[0] == 3
    assert manage("retention", "sometimes").returncode == 2
