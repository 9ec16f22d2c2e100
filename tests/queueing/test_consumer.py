import threading

import psycopg
import pytest
from django.db import InterfaceError, OperationalError, connection, transaction

from queueing import consumer, exceptions, groups, models, offsets, producer, topics, types, wakeups
from tests.conftest import cut_connection
from tests.queueing.test_wakeups import notified as _notified
from tests.queueing.test_wakeups import wait_until_asked


def tp(topic, partition):
    return types.TopicPartition(topic=topic, partition=partition)


def drain(member, want, rounds=20):
    records = []
    for _ in range(rounds):
        records += member.poll(timeout=0.2)
        if len(records) >= want:
            break
    return records


@pytest.fixture
def make():
    """Build consumers that are closed after the test, whatever happens."""
    made = []

    def build(*args, **kwargs):
        member = consumer.Consumer(*args, **kwargs)
        made.append(member)
        return member

    yield build
    for member in made:
        member.close(commit=False)


@pytest.fixture(autouse=True)
def fast_polls(settings):
    settings.SLUICE = {**settings.SLUICE, "POLL_FALLBACK_MS": 50, "HEARTBEAT_INTERVAL_MS": 60_000}


def test_a_new_group_starts_at_earliest_or_latest(db, topic):
    producer.send_batch(topic.name, [b"old1", b"old2"], partition=0)
    with consumer.Consumer("early", [topic.name], auto_offset_reset="earliest") as early:
        assert [r.value for r in drain(early, 2)] == [b"old1", b"old2"]
    with consumer.Consumer("late", [topic.name], auto_offset_reset="latest") as late:
        assert late.poll(timeout=0) == []
        producer.send(topic.name, b"new", partition=0)
        assert [r.value for r in drain(late, 1)] == [b"new"]


def test_records_come_in_offset_order_per_partition(db, topic):
    for i in range(30):
        producer.send(topic.name, str(i).encode(), key=f"k{i % 5}")
    with consumer.Consumer("g", [topic.name], auto_offset_reset="earliest", max_poll_records=7) as member:
        records = drain(member, 30)
    assert len(records) == 30
    for partition in range(3):
        offsets_seen = [r.offset for r in records if r.partition == partition]
        assert offsets_seen == list(range(len(offsets_seen)))


def test_a_member_resumes_from_the_committed_offset(db, topic, make):
    producer.send_batch(topic.name, [b"a", b"b", b"c"], partition=1)
    member = make("resume", [topic.name], auto_offset_reset="earliest", enable_auto_commit=False)
    records = drain(member, 3)
    member.commit({tp(topic.name, 1): records[1].offset + 1})
    member.close(commit=False)
    with make("resume", [topic.name], auto_offset_reset="earliest") as again:
        assert [r.value for r in drain(again, 1)] == [b"c"]


def test_auto_commit_stores_positions_on_close(db, topic):
    producer.send_batch(topic.name, [b"a", b"b"], partition=2)
    with consumer.Consumer("auto", [topic.name], auto_offset_reset="earliest") as member:
        drain(member, 2)
    group = models.ConsumerGroup.objects.get(name="auto")
    assert models.CommittedOffset.objects.get(group=group, partition=2).offset == 2


def test_joining_members_split_the_partitions_and_bump_the_generation(db, topic, make):
    first = make("split", [topic.name])
    first.poll(timeout=0)
    assert [p.partition for p in first.assigned()] == [0, 1, 2]
    generation = first.assignment.generation
    second = make("split", [topic.name])
    second.poll(timeout=0)
    assert second.assignment.generation == generation + 1
    first._resync.set()
    first.poll(timeout=0)
    owned = sorted(p.partition for p in first.assigned()) + sorted(p.partition for p in second.assigned())
    assert sorted(owned) == [0, 1, 2]
    assert not set(first.assigned()) & set(second.assigned())
    second.close()
    first._resync.set()
    first.poll(timeout=0)
    assert [p.partition for p in first.assigned()] == [0, 1, 2]
    first.close()


def test_a_stale_generation_cannot_commit(db, topic, make):
    producer.send_batch(topic.name, [b"a"], partition=0)
    stale = make("fence", [topic.name], auto_offset_reset="earliest", enable_auto_commit=False)
    drain(stale, 1)
    newcomer = make("fence", [topic.name])
    newcomer.poll(timeout=0)
    with pytest.raises(exceptions.CommitFailed):
        stale.commit()
    assert not models.CommittedOffset.objects.filter(group__name="fence").exists()


def test_a_silent_member_loses_its_partitions_after_the_session_timeout(db, topic, make):
    silent = make("timeout", [topic.name], session_timeout_ms=1000)
    silent.poll(timeout=0)
    live = make("timeout", [topic.name])
    live.poll(timeout=0)
    models.GroupMember.objects.filter(id=silent.member_id).update(
        last_heartbeat=groups.db_now() - __import__("datetime").timedelta(seconds=5)
    )
    generation = groups.heartbeat(live.assignment.group_id, live.member_id)
    assert generation > live.assignment.generation
    live._resync.set()
    live.poll(timeout=0)
    assert [p.partition for p in live.assigned()] == [0, 1, 2]
    with pytest.raises(exceptions.UnknownMember):
        groups.heartbeat(silent.assignment.group_id, silent.member_id)


def read_three_then_reset_to_one(group, topic, make):
    """A live member that read and committed a, b, c on partition 0; then the group is reset to
    offset 1 under it. Returns the member and the reset plan."""
    producer.send_batch(topic.name, [b"a", b"b", b"c"], partition=0)
    member = make(group, [topic.name], auto_offset_reset="earliest", enable_auto_commit=False)
    drain(member, 3)
    member.commit()
    plan = offsets.plan_reset(group, topic_specs=[f"{topic.name}:0"], scenario="to_offset", value=1)
    offsets.execute_reset(plan, actor="tester", scenario="to_offset 1")
    return member, plan


def test_a_reset_fences_a_live_member_which_resumes_from_the_new_offsets(db, topic, make):
    member, plan = read_three_then_reset_to_one("live", topic, make)
    assert [(r.partition, r.current_offset, r.new_offset) for r in plan] == [(0, 3, 1)]
    with pytest.raises(exceptions.CommitFailed):
        member.commit({tp(topic.name, 0): 3})
    assert [r.value for r in drain(member, 2)] == [b"b", b"c"]
    audit = models.OffsetReset.objects.get()
    assert (audit.before, audit.after, audit.actor) == (3, 1, "tester")


def test_seek_moves_the_position(db, topic):
    producer.send_batch(topic.name, [b"a", b"b", b"c"], partition=0)
    with consumer.Consumer("seek", [topic.name], auto_offset_reset="earliest") as member:
        drain(member, 3)
        member.seek(tp(topic.name, 0), 1)
        assert [r.value for r in drain(member, 2)] == [b"b", b"c"]
        with pytest.raises(exceptions.InvalidArgument):
            member.seek(tp("other", 0), 0)


def test_bad_consumer_arguments_are_refused(db, topic, make):
    with pytest.raises(exceptions.InvalidArgument):
        make("", [topic.name])
    with pytest.raises(exceptions.InvalidArgument):
        make("g", [])
    with pytest.raises(exceptions.TopicNotFound):
        make("g", ["missing"]).poll(timeout=0)


def _send_later(topic_name, delay):
    def run():
        try:
            producer.send(topic_name, b"wake", partition=0)
        finally:
            connection.close()

    timer = threading.Timer(delay, run)
    timer.start()
    return timer


@pytest.mark.django_db(transaction=True)
def test_a_long_poll_is_woken_by_notify(settings):
    # With the fallback far beyond the poll timeout, only the NOTIFY can deliver the record in time.
    settings.SLUICE = {**settings.SLUICE, "POLL_FALLBACK_MS": 60_000}
    topics.create_topic("wake", partitions=1)
    with consumer.Consumer("wake", ["wake"], auto_offset_reset="earliest") as member:
        member.poll(timeout=0)
        timer = _send_later("wake", 0.3)
        records = member.poll(timeout=20)
        timer.join()
    assert [r.value for r in records] == [b"wake"]


@pytest.mark.django_db(transaction=True)
def test_without_notifications_it_falls_back_to_polling(settings, monkeypatch):
    def refuse(channels):
        raise psycopg.OperationalError("LISTEN refused for the test")

    monkeypatch.setattr(wakeups, "listen_connection", refuse)
    topics.create_topic("fallback", partitions=1)
    with consumer.Consumer("fallback", ["fallback"], auto_offset_reset="earliest") as member:
        member.poll(timeout=0)
        timer = _send_later("fallback", 0.2)
        records = member.poll(timeout=20)
        timer.join()
    assert [r.value for r in records] == [b"wake"]


@pytest.mark.django_db(transaction=True)
def test_a_waiting_consumer_stops_asking_once_it_is_busy(settings):
    settings.SLUICE = {**settings.SLUICE, "POLL_FALLBACK_MS": 60_000}
    info = topics.create_topic("busy", partitions=1)
    with consumer.Consumer("busy", ["busy"], auto_offset_reset="earliest") as member:
        wait_until_asked(member)
        with wakeups.listen_connection([f"sluice_t{info.id}"]) as listener:
            producer.send("busy", b"x", partition=0)  # the member asked: this append notifies
            assert _notified(listener, 5) == ["0"]
            assert [r.value for r in member.poll(timeout=5)] == [b"x"]
            # Woken, it keeps its ask for the read after: it will most likely sleep again.
            assert member._waiter.asking
            producer.send("busy", b"y", partition=0)
            assert _notified(listener, 5) == ["0"]
            assert [r.value for r in member.poll(timeout=5)] == [b"y"]
            # Two reads in a row found records: busy, it no longer asks.
            assert not member._waiter.asking
            producer.send("busy", b"z", partition=0)
            assert _notified(listener) == []


def test_an_offset_commit_is_all_or_nothing(db, topic, make):
    from queueing import storage

    first = make("split2", [topic.name])
    first.poll(timeout=0)
    second = make("split2", [topic.name])
    second.poll(timeout=0)
    first._resync.set()
    first.poll(timeout=0)
    mine = [(topic.id, p.partition) for p in first.assigned()]
    theirs = [(topic.id, p.partition) for p in second.assigned()]
    offsets = {mine[0]: 1, theirs[0]: 1}
    assert not storage.commit_offsets(group_id=first.assignment.group_id, member_id=first.member_id,
                                      generation=first.assignment.generation, offsets=offsets)
    assert not models.CommittedOffset.objects.filter(group__name="split2").exists()
    assert storage.commit_offsets(group_id=first.assignment.group_id, member_id=first.member_id,
                                  generation=first.assignment.generation, offsets={mine[0]: 1})


def committed(group):
    return {c.partition: c.offset for c in models.CommittedOffset.objects.filter(group__name=group)}


def test_commit_async_is_stored_by_the_next_poll_in_its_round_trip(db, topic, make, monkeypatch):
    from queueing.storage import log

    producer.send_batch(topic.name, [b"a", b"b"], partition=0)
    member = make("async", [topic.name], auto_offset_reset="earliest", enable_auto_commit=False)
    records = drain(member, 2)
    member.commit_async()
    assert committed("async") == {}  # nothing sent yet
    producer.send(topic.name, b"c", partition=0)
    statements, run = [], log.run
    monkeypatch.setattr(log, "run", lambda cur, name, *a, **k: statements.append(name) or run(cur, name, *a, **k))
    later = member.poll(timeout=1)
    monkeypatch.undo()
    assert statements == ["commit_and_fetch"]  # the commit rode on the fetch: one statement
    assert committed("async") == {0: records[-1].offset + 1}
    assert [r.value for r in later] == [b"c"]
    member.commit_async({tp(topic.name, 0): later[0].offset + 1})
    member.close(commit=False)  # what commit_async left is stored on close, auto commit or not
    assert committed("async") == {0: 3}


def test_a_fenced_commit_async_hands_out_nothing_stale_and_stores_nothing(db, topic, make):
    member, _ = read_three_then_reset_to_one("afence", topic, make)
    member.commit_async({tp(topic.name, 0): 3})
    # The commit is refused with the fetch; the member re-syncs and reads from the reset offset.
    assert [r.value for r in drain(member, 2)] == [b"b", b"c"]
    assert committed("afence") == {0: 1}


def test_a_sync_commit_takes_what_commit_async_left(db, topic, make):
    producer.send_batch(topic.name, [b"a"], partition=0)
    producer.send_batch(topic.name, [b"b"], partition=1)
    member = make("mixed", [topic.name], auto_offset_reset="earliest", enable_auto_commit=False)
    records = drain(member, 2)
    first, second = sorted(records, key=lambda r: r.partition)
    member.commit_async({tp(topic.name, 0): first.offset + 1})
    member.commit({tp(topic.name, 1): second.offset + 1})
    assert committed("mixed") == {0: 1, 1: 1}


def test_several_partitions_in_one_poll_each_come_in_order(db, topic, make):
    for partition in range(3):
        producer.send_batch(topic.name, [f"{partition}-{i}".encode() for i in range(40)], partition=partition)
    member = make("runs", [topic.name], auto_offset_reset="earliest", max_poll_records=90)
    records = member.poll(timeout=1)
    assert len(records) == 90  # 30 from each partition
    for partition in range(3):
        mine = [r for r in records if r.partition == partition]
        assert [r.offset for r in mine] == list(range(30))
        assert [r.value for r in mine] == [f"{partition}-{i}".encode() for i in range(30)]
    rest = drain(member, 30)
    assert sorted((r.partition, r.offset) for r in rest) == [(p, o) for p in range(3) for o in range(30, 40)]


@pytest.mark.django_db(transaction=True)
def test_offsets_left_by_commit_async_survive_a_cut_connection():
    topics.create_topic("cutasync", partitions=1)
    producer.send_batch("cutasync", [b"a", b"b"], partition=0)
    member = consumer.Consumer("cutasync", ["cutasync"], auto_offset_reset="earliest", enable_auto_commit=False)
    try:
        drain(member, 2)
        member.commit_async()
        cut_connection()
        with pytest.raises((OperationalError, InterfaceError)):
            member.commit()
        connection.close()
        member.commit()  # on a new connection: what commit_async left was kept, and is stored now
        assert committed("cutasync") == {0: 2}
    finally:
        member.close(commit=False)
