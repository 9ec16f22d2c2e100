import pytest

from queueing import exceptions, models, producer, topics


def test_it_creates_describes_alters_and_deletes_a_topic(db):
    info = topics.create_topic("orders.v1", partitions=2, retention_ms=60_000, max_message_bytes=2048)
    assert (info.name, info.partition_count, info.retention_ms, info.max_message_bytes) == ("orders.v1", 2, 60_000, 2048)
    producer.send_batch("orders.v1", [b"a", b"b", b"c"], partition=1)
    described, partitions = topics.describe_topic("orders.v1")
    assert [(p.partition, p.log_start_offset, p.log_end_offset, p.size_bytes) for p in partitions] == [
        (0, 0, 0, 0),
        (1, 0, 3, 3),
    ]
    topics.alter_topic("orders.v1", partitions=4)
    assert [p.partition for p in topics.describe_topic("orders.v1")[1]] == [0, 1, 2, 3]
    topics.delete_topic("orders.v1")
    with pytest.raises(exceptions.TopicNotFound):
        topics.describe_topic("orders.v1")
    assert "orders.v1" not in [t.name for t in topics.list_topics()]


@pytest.mark.parametrize("name", ["", "a b", "a/b", "ü", "x" * 250, ".", "..", "semi;colon"])
def test_it_refuses_names_outside_kafkas_rule(db, name):
    with pytest.raises(exceptions.InvalidTopicName):
        topics.create_topic(name)
    assert not models.Topic.objects.filter(name=name).exists()


def test_it_accepts_the_longest_legal_name(db):
    assert topics.create_topic("a" * 249).name == "a" * 249


def test_it_refuses_a_duplicate_topic(db):
    topics.create_topic("dup")
    with pytest.raises(exceptions.TopicExists):
        topics.create_topic("dup", partitions=5)
    assert topics.get_topic("dup").partition_count == 1


def test_partitions_only_grow(db):
    topics.create_topic("grow", partitions=3)
    with pytest.raises(exceptions.InvalidArgument, match="can only grow"):
        topics.alter_topic("grow", partitions=2)
    assert topics.get_topic("grow").partition_count == 3


@pytest.mark.parametrize("bad", [0, -1, "3", 1.5, True])
def test_it_refuses_bad_partition_counts(db, bad):
    with pytest.raises(exceptions.InvalidArgument):
        topics.create_topic("p", partitions=bad)


def test_deleting_a_topic_removes_its_records(db, topic):
    from queueing import models

    producer.send_batch(topic.name, [b"1", b"2"])
    topics.delete_topic(topic.name)
    assert not models.Record.objects.filter(topic_id=topic.id).exists()
    assert not models.Partition.objects.filter(topic_id=topic.id).exists()


@pytest.mark.django_db(transaction=True)
def test_a_topic_created_in_a_transaction_that_rolls_back_is_not_left_in_the_producers_cache():
    from django.db import transaction

    class RolledBack(Exception):
        pass

    with pytest.raises(RolledBack), transaction.atomic():
        topics.create_topic("gone.v1", partitions=1)
        assert topics.cached_topic("gone.v1").name == "gone.v1"  # its own transaction sees it
        producer.send("gone.v1", b"x")
        raise RolledBack()
    with pytest.raises(exceptions.TopicNotFound):
        topics.cached_topic("gone.v1")
    with transaction.atomic():  # created again and committed: cached from then on
        topics.create_topic("gone.v1", partitions=1)
        producer.send("gone.v1", b"y")
    assert topics.cached_topic("gone.v1") is topics.cached_topic("gone.v1")
    assert producer.send("gone.v1", b"z").offset == 1
