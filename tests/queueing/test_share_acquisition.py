"""What the task layer's acquisition needs from share groups: topics polled in a given order
(priority bands), a subscription changed while a member, a record handed back without counting
the delivery, and a waiting record made available at once."""
import pytest
from django.db import connection

from queueing import models, producer, share, topics


@pytest.fixture
def make(db, settings):
    settings.SLUICE = {**settings.SLUICE, "POLL_FALLBACK_MS": 20}
    made = []

    def build(*args, **kwargs):
        member = share.ShareConsumer(*args, auto_offset_reset="earliest", **kwargs)
        made.append(member)
        return member

    yield build
    for member in made:
        member.close()


def test_an_ordered_poll_fills_from_the_first_topic_before_the_next(make):
    for name in ("low", "mid", "high"):
        topics.create_topic(name, partitions=2)
    producer.send_batch("low", [b"l1", b"l2", b"l3"])
    producer.send_batch("mid", [b"m1", b"m2"])
    producer.send_batch("high", [b"h1"])
    member = make("bands", ["high", "mid", "low"], ordered=True, max_records=10)
    taken = [r.topic for r in member.poll(timeout=0, max_records=2)]
    assert taken == ["high", "mid"]
    taken = [r.topic for r in member.poll(timeout=0, max_records=2)]
    assert taken == ["mid", "low"]


def test_a_member_subscribes_to_a_topic_created_after_it_joined(make):
    topics.create_topic("first", partitions=1)
    member = make("late", ["first"], ordered=True)
    assert member.poll(timeout=0) == []
    topics.create_topic("second", partitions=1)
    producer.send_batch("second", [b"a"])
    producer.send_batch("first", [b"b"])
    member.subscribe(["second", "first"])
    assert [(r.topic, r.value) for r in member.poll(timeout=0, max_records=1)] == [("second", b"a")]
    assert models.ShareGroupMember.objects.get(id=member.member_id).topics == ["first", "second"]


def test_a_deferred_record_comes_back_after_its_delay_with_the_same_delivery_count(make):
    topics.create_topic("limited", partitions=1)
    producer.send_batch("limited", [b"a", b"b"])
    member = make("g", ["limited"])
    first, second = member.poll(timeout=0)
    assert member.settle(first, share.DEFER, delay=60)
    member.defer(second, delay=0)
    member.flush()
    [again] = member.poll(timeout=0)  # the first waits its minute, the second is due at once
    assert (again.offset, again.delivery_count) == (1, 1)
    with connection.cursor() as cursor:
        cursor.execute("UPDATE queueing_sharedelivery SET available_at = now() WHERE state = 2")
    [first_again] = member.poll(timeout=0)
    assert (first_again.offset, first_again.delivery_count) == (0, 1)


def test_a_deferral_after_the_lock_was_lost_is_refused(make):
    topics.create_topic("limited", partitions=1)
    producer.send("limited", b"a")
    member, other = make("g", ["limited"]), make("g", ["limited"])
    [record] = member.poll(timeout=0)
    with connection.cursor() as cursor:
        cursor.execute("UPDATE queueing_sharedelivery SET lock_until = now() - interval '1 second'")
    [taken] = other.poll(timeout=0)
    assert taken.delivery_count == 2
    assert not member.settle(record, share.DEFER, delay=0)
    assert models.ShareDelivery.objects.get().member_id == other.member_id


def test_expedite_makes_a_waiting_record_available_now(make):
    topics.create_topic("limited", partitions=1)
    producer.send("limited", b"a")
    member = make("g", ["limited"])
    [record] = member.poll(timeout=0)
    assert share.expedite("g", [("limited", 0, 0)]) == 0  # held: left alone
    assert member.settle(record, share.DEFER, delay=3600)
    assert member.poll(timeout=0) == []
    assert share.expedite("g", [("limited", 0, 0)]) == 1
    [again] = member.poll(timeout=0)
    assert again.delivery_count == 1
