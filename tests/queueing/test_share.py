import pytest
from django.db import connection, transaction

from queueing import exceptions, models, producer, share, types


@pytest.fixture(autouse=True)
def fast(settings):
    settings.SLUICE = {**settings.SLUICE, "POLL_FALLBACK_MS": 20}


@pytest.fixture
def make():
    made = []

    def build(*args, **kwargs):
        kwargs.setdefault("auto_offset_reset", "earliest")
        member = share.ShareConsumer(*args, **kwargs)
        made.append(member)
        return member

    yield build
    for member in made:
        member.close()


def expire_locks():
    with connection.cursor() as cursor:
        cursor.execute("UPDATE queueing_sharedelivery SET lock_until = now() - interval '1 second' WHERE state = 1")


def make_due():
    with connection.cursor() as cursor:
        cursor.execute("UPDATE queueing_sharedelivery SET available_at = now() - interval '1 second' WHERE state = 2")


def dead_letters(name):
    from queueing import topics

    info = topics.get_topic(name)
    return list(models.Record.objects.filter(topic_id=info.id).order_by("offset"))


def test_two_members_share_one_partition_without_overlap(db, make):
    from queueing import topics

    topics.create_topic("jobs", partitions=1)
    producer.send_batch("jobs", [str(i).encode() for i in range(10)])
    a, b = make("workers", ["jobs"], max_records=4), make("workers", ["jobs"], max_records=4)
    got_a, got_b = a.poll(timeout=0), b.poll(timeout=0)
    assert len(got_a) == 4 and len(got_b) == 4
    assert not {r.offset for r in got_a} & {r.offset for r in got_b}
    for record in got_a + got_b:
        (a if record in got_a else b).accept(record)
    a.flush(), b.flush()
    rest = a.poll(timeout=0) + b.poll(timeout=0)
    assert sorted(r.offset for r in rest) == [8, 9]
    assert all(r.delivery_count == 1 for r in got_a + got_b + rest)


def test_a_poll_with_nothing_to_acquire_writes_no_row_version(db, make):
    """A poll of an idle partition is a read: no lock and no new version of the group's partition
    row (each version is WAL and, until vacuumed, a dead tuple); one that acquires still writes."""
    from queueing import topics

    topics.create_topic("jobs", partitions=2)
    member = make("idle", ["jobs"], max_records=10)
    assert member.poll(timeout=0) == []

    def versions():
        with connection.cursor() as cursor:
            cursor.execute("SELECT partition, ctid::text FROM queueing_sharepartition WHERE group_id = %s",
                           [member.group_row.id])
            return dict(cursor.fetchall())

    before = versions()
    assert member.poll(timeout=0) == []
    assert versions() == before
    producer.send("jobs", b"x", partition=1)
    [record] = member.poll(timeout=0)
    after = versions()
    assert after[0] == before[0] and after[1] != before[1]
    # Held, then its lock lapses: a lock that ran out is something to acquire.
    assert member.poll(timeout=0) == [] and versions() == after
    expire_locks()
    [again] = member.poll(timeout=0)
    assert (again.offset, again.delivery_count) == (record.offset, 2)


def test_an_expired_lock_redelivers_and_counts_a_delivery(db, make):
    from queueing import topics

    topics.create_topic("jobs", partitions=1)
    producer.send("jobs", b"x")
    slow, other = make("g", ["jobs"]), make("g", ["jobs"])
    [first] = slow.poll(timeout=0)
    assert other.poll(timeout=0) == []  # still locked
    expire_locks()
    [again] = other.poll(timeout=0)
    assert (again.offset, again.delivery_count) == (first.offset, 2)
    slow.accept(first)
    assert slow.flush() == [first]  # its lock was lost: refused
    other.accept(again)
    assert other.flush() == []
    assert models.DeliveryAttempt.objects.filter(outcome="expired").count() == 1
    assert not models.ShareDelivery.objects.exists()


def test_release_with_delay_and_renew(db, make):
    from queueing import topics

    topics.create_topic("jobs", partitions=1)
    producer.send("jobs", b"x")
    member = make("g", ["jobs"])
    [record] = member.poll(timeout=0)
    assert member.renew([record]) == []
    member.release(record, delay=3600)
    member.flush()
    assert member.poll(timeout=0) == []
    make_due()
    [again] = member.poll(timeout=0)
    assert again.delivery_count == 2


def test_the_delivery_limit_is_exact_then_the_record_is_dead_lettered(db, make):
    from queueing import topics

    topics.create_topic("jobs", partitions=1)
    share.configure_group("g", delivery_limit=3, backoff_base_ms=1)
    producer.send("jobs", {"n": 1}, key="k1", headers={"trace": "t"})
    member = make("g", ["jobs"])
    attempts = 0
    for _ in range(10):
        make_due()
        records = member.poll(timeout=0)
        for record in records:
            attempts += 1
            member.fail(record, error="boom", traceback="Traceback ...")
        member.flush()
    assert attempts == 3
    [letter] = dead_letters("g.DLQ")
    assert bytes(letter.key) == b"k1" and letter.value_format == types.ValueFormat.JSON
    assert letter.headers["trace"] == "t"
    assert letter.headers[types.DLQ_ORIGINAL_TOPIC] == "jobs"
    assert letter.headers[types.DLQ_ATTEMPTS] == "3"
    assert letter.headers[types.DLQ_ERROR] == "boom"
    outcomes = list(models.DeliveryAttempt.objects.order_by("id").values_list("attempt", "outcome"))
    assert outcomes == [(1, "failed"), (2, "failed"), (3, "dead_lettered")]
    assert not models.ShareDelivery.objects.exists()


def test_an_expired_last_delivery_is_dead_lettered(db, make):
    from queueing import topics

    topics.create_topic("jobs", partitions=1)
    share.configure_group("g", delivery_limit=1, dead_letter_topic="parking")
    producer.send("jobs", b"x")
    member = make("g", ["jobs"])
    assert len(member.poll(timeout=0)) == 1
    expire_locks()
    assert member.poll(timeout=0) == []
    assert [bytes(r.value) for r in dead_letters("parking")] == [b"x"]


def test_reject_dead_letters_at_once(db, make):
    from queueing import topics

    topics.create_topic("jobs", partitions=1)
    producer.send("jobs", b"poison")
    member = make("g", ["jobs"])
    [record] = member.poll(timeout=0)
    member.reject(record, reason="cannot parse")
    member.flush()
    [letter] = dead_letters("g.DLQ")
    assert letter.headers[types.DLQ_ERROR] == "cannot parse"


def test_no_cap_on_records_in_flight(db, make):
    from queueing import topics

    topics.create_topic("jobs", partitions=1)
    producer.send_batch("jobs", [b"x"] * 1500)
    member = make("g", ["jobs"], max_records=1000)
    assert len(member.poll(timeout=0)) == 1000
    assert len(member.poll(timeout=0)) == 500
    held = models.ShareDelivery.objects.filter(state=1)
    assert sum(d.last_offset - d.offset + 1 for d in held) == 1500
    assert held.count() == 2  # a batch acquired together is one range row


def test_bad_policies_are_refused(db):
    for bad in [{"delivery_limit": 0}, {"backoff": "linear"}, {"backoff_levels_ms": []}, {"dead_letter_topic": "a b"},
                {"lock_duration_ms": 5}]:
        with pytest.raises(exceptions.InvalidArgument):
            share.configure_group("g", **bad)
    assert not models.ShareGroup.objects.exists()


def test_records_of_one_batch_can_meet_different_fates(db, make):
    from queueing import topics

    topics.create_topic("jobs", partitions=1)
    producer.send_batch("jobs", [b"a", b"b", b"c", b"d"])
    member = make("g", ["jobs"])
    a, b, c, d = member.poll(timeout=0)
    member.accept(a)
    member.accept(c)
    member.release(b, delay=3600)
    assert member.flush() == []
    rows = {(r.offset, r.last_offset, r.state) for r in models.ShareDelivery.objects.all()}
    assert rows == {(1, 1, 2), (3, 3, 1)}  # b waits, d is still held; a and c are finished
    assert member.renew([d]) == []
    member.accept(d)
    member.flush()
    assert member.renew([d]) == [d]  # no longer held
    make_due()
    [again] = member.poll(timeout=0)
    assert (again.value, again.delivery_count) == (b"b", 2)


def test_a_partly_accepted_range_is_refused_for_the_part_taken_by_another(db, make):
    from queueing import topics

    topics.create_topic("jobs", partitions=1)
    producer.send_batch("jobs", [b"a", b"b"])
    slow, fast = make("g", ["jobs"]), make("g", ["jobs"])
    a, b = slow.poll(timeout=0)
    expire_locks()
    taken = fast.poll(timeout=0)
    assert [r.offset for r in taken] == [0, 1]
    slow.accept(a)
    assert slow.flush() == [a]
    for record in taken:
        fast.accept(record)
    assert fast.flush() == []
    assert not models.ShareDelivery.objects.exists()


def test_acceptances_ride_with_their_partitions_next_acquisition_or_go_when_overdue(db, make, monkeypatch):
    """Acknowledgements of a partition a poll did not reach are not sent in a statement of their
    own at once (that halved a lone member's rate), but they are never held past a quarter lock."""
    from queueing import topics
    from queueing.storage import share as storage

    topics.create_topic("jobs", partitions=2)
    producer.send_batch("jobs", [b"a"] * 4, partition=0)
    producer.send_batch("jobs", [b"b"] * 4, partition=1)
    share.configure_group("riders", lock_duration_ms=2000)
    member = make("riders", ["jobs"], max_records=4)
    order = [0, 1]
    monkeypatch.setattr(share.random, "shuffle", lambda slots: slots.sort(key=lambda s: order.index(s[1])))
    calls, poll = [], storage.poll
    monkeypatch.setattr(storage, "poll", lambda **kw: calls.append((kw["partition"], len(kw["accept"]))) or poll(**kw))

    first = member.poll(timeout=0)
    assert {r.partition for r in first} == {0} and calls == [(0, 0)]
    for record in first:
        member.accept(record)
    order[:] = [1, 0]
    calls.clear()
    second = member.poll(timeout=0)
    assert {r.partition for r in second} == {1}
    assert calls == [(1, 0)]  # one statement: partition 0's acceptances wait for its next turn
    assert models.ShareDelivery.objects.filter(partition=0, state=1).exists()
    producer.send_batch("jobs", [b"c"] * 4, partition=1)  # the next poll fills up on partition 1 again
    member._accepts_since = {slot: since - 0.6 for slot, since in member._accepts_since.items()}  # 0.6 s > 2 s / 4
    calls.clear()
    third = member.poll(timeout=0)
    assert {r.partition for r in third} == {1}
    assert calls == [(1, 0), (0, 4)]  # overdue: partition 0's acceptances went on their own
    assert not models.ShareDelivery.objects.filter(partition=0).exists()


def test_polls_not_durable_commit_without_waiting_for_the_wal_outside_a_transaction(transactional_db, make,
                                                                                    monkeypatch):
    """Guards durable_polls=False (the kombu transport's acquisitions): its polls, and only its own,
    commit with synchronous_commit off, and a poll inside a caller's transaction keeps its level."""
    from queueing import topics
    from queueing.storage import share as share_storage

    topics.create_topic("jobs", partitions=1)
    producer.send_batch("jobs", [b"a", b"b", b"c"])
    levels = []
    run = share_storage.run

    def spy(cur, name, params, **kwargs):  # the real statement runs: only its commit level is noted
        if name == "share_poll":
            levels.append(params["commit_level"])
        return run(cur, name, params, **kwargs)

    monkeypatch.setattr(share_storage, "run", spy)
    quick = make("workers", ["jobs"], max_records=1, durable_polls=False)
    durable = make("workers", ["jobs"], max_records=1)
    first = quick.poll(timeout=0)
    quick.accept(first[0])
    second = quick.poll(timeout=0)
    durable.poll(timeout=0)
    with transaction.atomic():
        quick.poll(timeout=0)
    assert levels == ["off", "off", None, None]
    assert first[0].offset != second[0].offset
    assert not models.ShareDelivery.objects.filter(offset=first[0].offset).exists()  # accepted with the second poll
