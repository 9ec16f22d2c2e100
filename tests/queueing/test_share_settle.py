"""ShareConsumer.settle: one acknowledgement inside the caller's transaction (the task layer writes
a task's outcome beside it). Apart from test_share.py, which covers the batched acknowledgements."""
import pytest
from django.db import connection, transaction

from queueing import models, producer, share, topics


@pytest.fixture
def member(db, settings):
    settings.SLUICE = {**settings.SLUICE, "POLL_FALLBACK_MS": 20}
    topics.create_topic("jobs", partitions=1)
    made = share.ShareConsumer("g", ["jobs"], auto_offset_reset="earliest")
    yield made
    made.close()


def held():
    return list(models.ShareDelivery.objects.order_by("offset").values_list("offset", "last_offset", "state"))


def test_accept_splits_the_batch_and_finishes_one_record(member):
    producer.send_batch("jobs", [b"a", b"b", b"c"])
    records = member.poll(timeout=0)
    assert member.settle(records[1], share.ACCEPT)
    assert held() == [(0, 0, 1), (2, 2, 1)]


def test_an_acceptance_rolls_back_with_the_callers_transaction(member):
    producer.send("jobs", b"a")
    [record] = member.poll(timeout=0)
    with pytest.raises(RuntimeError), transaction.atomic():
        assert member.settle(record, share.ACCEPT)
        raise RuntimeError("the caller's own write failed")
    assert held() == [(0, 0, 1)]  # still held, to be settled again


def test_release_makes_the_record_available_after_the_delay(member):
    producer.send("jobs", b"a")
    [record] = member.poll(timeout=0)
    assert member.settle(record, share.RELEASE, delay=60, error="boom")
    [row] = models.ShareDelivery.objects.all()
    assert (row.state, row.member_id) == (models.ShareDelivery.State.AVAILABLE, None)
    assert member.poll(timeout=0) == []
    assert models.DeliveryAttempt.objects.get().outcome == "failed"


def test_reject_dead_letters_in_the_same_transaction(member):
    producer.send("jobs", b"bad")
    [record] = member.poll(timeout=0)
    assert member.settle(record, share.REJECT, error="ValueError: bad")
    assert held() == []
    [letter] = models.Record.objects.filter(topic_id=topics.get_topic("g.DLQ").id)
    assert bytes(letter.value) == b"bad"


def test_a_settlement_after_the_lock_was_lost_is_refused(member):
    producer.send("jobs", b"a")
    [record] = member.poll(timeout=0)
    with connection.cursor() as cursor:
        cursor.execute("UPDATE queueing_sharedelivery SET lock_until = now() - interval '1 second'")
    with share.ShareConsumer("g", ["jobs"], auto_offset_reset="earliest") as other:
        [again] = other.poll(timeout=0)
        assert not member.settle(record, share.ACCEPT)
        assert not member.settle(record, share.REJECT)
        assert held() == [(0, 0, 1)]
        assert other.settle(again, share.ACCEPT)


def test_accept_now_of_a_whole_batch_removes_its_range_without_splitting_it(member):
    producer.send_batch("jobs", [b"a", b"b", b"c", b"d"])
    records = member.poll(timeout=0, max_records=3)
    assert held() == [(0, 2, 1)]  # one row for the three
    with transaction.atomic():
        assert member.accept_now(records) == []
    assert held() == []
    assert [r.offset for r in member.poll(timeout=0)] == [3]


def test_accept_now_of_part_of_a_batch_splits_and_finishes_only_those(member):
    producer.send_batch("jobs", [b"a", b"b", b"c"])
    records = member.poll(timeout=0)
    with transaction.atomic():
        assert member.accept_now([records[0], records[2]]) == []
    assert held() == [(1, 1, 1)]


def test_accept_now_refuses_a_range_acquired_again_and_keeps_what_it_holds(member):
    producer.send_batch("jobs", [b"a", b"b", b"c", b"d"])
    first = member.poll(timeout=0, max_records=2)
    second = member.poll(timeout=0, max_records=2)
    # The first range's lock was lost and another member holds it now (a new delivery count).
    models.ShareDelivery.objects.filter(offset=0).update(delivery_count=2, member_id="another-member")
    with transaction.atomic():
        refused = member.accept_now([*first, *second])
    assert [r.offset for r in refused] == [0, 1]
    assert held() == [(0, 1, 1)]
