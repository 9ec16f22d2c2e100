"""Deleting records below an offset (Kafka's DeleteRecords): retention.delete_records and
`manage.py topics delete-records`."""
import io

import pytest
from django.core.management import CommandError, call_command

from queueing import consumer, exceptions, models, producer, retention, topics


def bounds(topic, partition=0):
    part = models.Partition.objects.get(topic__name=topic, number=partition)
    return part.log_start_offset, part.next_offset, part.size_bytes


def stored(topic, partition=0):
    """Offsets physically in the table, below the log start or not."""
    return sorted(models.Record.objects.filter(topic_id=topics.get_topic(topic).id, partition=partition)
                  .values_list("offset", flat=True))


def test_it_deletes_the_records_below_the_offset_and_moves_the_log_start(db):
    topics.create_topic("orders.DLQ", partitions=2)
    producer.send_batch("orders.DLQ", [b"x" * 10] * 5, partition=0)
    producer.send_batch("orders.DLQ", [b"y" * 10] * 3, partition=1)
    done = retention.delete_records("orders.DLQ", before=3, partitions=[0])
    assert [(d.partition, d.old_start, d.new_start, d.deleted) for d in done] == [(0, 0, 3, 3)]
    assert bounds("orders.DLQ") == (3, 5, 20)
    assert stored("orders.DLQ") == [3, 4]
    assert stored("orders.DLQ", 1) == [0, 1, 2]  # the other partition is untouched
    # Offsets stay dense above the new start: the next record takes the next offset.
    assert producer.send("orders.DLQ", b"z", partition=0).offset == 5
    assert stored("orders.DLQ") == [3, 4, 5]


def test_without_an_offset_it_empties_every_partition(db):
    topics.create_topic("orders.DLQ", partitions=2)
    producer.send_batch("orders.DLQ", [b"x"] * 4, partition=0)
    producer.send_batch("orders.DLQ", [b"y"] * 2, partition=1)
    done = retention.delete_records("orders.DLQ")
    assert [(d.partition, d.new_start, d.deleted) for d in done] == [(0, 4, 4), (1, 2, 2)]
    assert bounds("orders.DLQ") == (4, 4, 0) and bounds("orders.DLQ", 1) == (2, 2, 0)
    assert stored("orders.DLQ") == [] and stored("orders.DLQ", 1) == []


def test_offsets_per_partition_and_an_offset_below_the_log_start_changes_nothing(db):
    topics.create_topic("orders.DLQ", partitions=2)
    producer.send_batch("orders.DLQ", [b"x"] * 4, partition=0)
    producer.send_batch("orders.DLQ", [b"y"] * 4, partition=1)
    retention.delete_records("orders.DLQ", before={0: 2, 1: 1})
    assert bounds("orders.DLQ")[0] == 2 and bounds("orders.DLQ", 1)[0] == 1
    done = retention.delete_records("orders.DLQ", before={0: 1})
    assert [(d.partition, d.old_start, d.new_start, d.deleted) for d in done] == [(0, 2, 2, 0)]
    assert stored("orders.DLQ") == [2, 3]


def test_it_refuses_bad_requests_and_changes_nothing(db):
    topics.create_topic("orders", partitions=1)
    topics.create_topic("orders.DLQ", partitions=1)
    producer.send_batch("orders", [b"x"] * 3, partition=0)
    producer.send_batch("orders.DLQ", [b"x"] * 3, partition=0)
    with pytest.raises(exceptions.NotADeadLetterTopic):
        retention.delete_records("orders", before=2)
    with pytest.raises(exceptions.OffsetOutOfRange, match="beyond the end"):
        retention.delete_records("orders.DLQ", before=4)
    with pytest.raises(exceptions.PartitionNotFound):
        retention.delete_records("orders.DLQ", partitions=[1])
    with pytest.raises(exceptions.PartitionNotFound):
        retention.delete_records("orders.DLQ", before={3: 1})
    with pytest.raises(exceptions.TopicNotFound):
        retention.delete_records("missing.DLQ")
    assert bounds("orders") == (0, 3, 3) and bounds("orders.DLQ") == (0, 3, 3)
    assert stored("orders") == [0, 1, 2] and stored("orders.DLQ") == [0, 1, 2]
    # Asked explicitly, any topic.
    retention.delete_records("orders", before=2, any_topic=True)
    assert stored("orders") == [2]


def test_a_policy_named_dead_letter_topic_counts_as_one(db):
    from queueing import retries

    topics.create_topic("failures", partitions=1)
    topics.create_topic("orders", partitions=1)
    retries.configure_topic("orders", dead_letter_topic="failures")
    producer.send_batch("failures", [b"x"] * 2, partition=0)
    assert retention.delete_records("failures")[0].deleted == 2


def test_a_committed_offset_below_the_new_log_start_resets_as_after_retention(db):
    topics.create_topic("orders.DLQ", partitions=1)
    producer.send_batch("orders.DLQ", [str(i).encode() for i in range(5)], partition=0)
    with consumer.Consumer("triage", ["orders.DLQ"], auto_offset_reset="earliest") as member:
        assert len(member.poll(timeout=0, max_records=1)) == 1
        member.commit()  # committed offset 1
    retention.delete_records("orders.DLQ", before=4)
    with consumer.Consumer("triage", ["orders.DLQ"], auto_offset_reset="earliest") as member:
        # Offset 1 is gone: earliest means the new log start.
        assert [r.value for r in member.poll(timeout=0.2)] == [b"4"]


def test_the_command_deletes_with_yes_and_refuses_without_a_terminal(db):
    topics.create_topic("orders", partitions=1)
    topics.create_topic("orders.DLQ", partitions=2)
    producer.send_batch("orders.DLQ", [b"x"] * 3, partition=0)
    producer.send_batch("orders", [b"x"] * 3, partition=0)
    with pytest.raises(CommandError, match="add --yes"):
        call_command("topics", "delete-records", "orders.DLQ")
    assert stored("orders.DLQ") == [0, 1, 2]
    with pytest.raises(CommandError, match="not a dead-letter topic: add --any-topic"):
        call_command("topics", "delete-records", "orders", "--yes")
    with pytest.raises(CommandError, match="beyond the end"):
        call_command("topics", "delete-records", "orders.DLQ", "--before", "9", "--yes")
    with pytest.raises(CommandError, match="has no partition 7"):
        call_command("topics", "delete-records", "orders.DLQ", "--partition", "7", "--yes")
    out = io.StringIO()
    call_command("topics", "delete-records", "orders.DLQ", "--before", "2", "--partition", "0", "--yes", stdout=out)
    assert out.getvalue() == "orders.DLQ-0: log start 0 -> 2, 2 record(s) deleted\n"
    assert stored("orders.DLQ") == [2]
    call_command("topics", "delete-records", "orders", "--any-topic", "--yes", stdout=io.StringIO())
    assert stored("orders") == [] and bounds("orders") == (3, 3, 0)
