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
