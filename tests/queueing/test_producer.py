import threading

import pytest
from django.db import IntegrityError, connection, transaction

from queueing import exceptions, models, partitioner, producer, storage, topics, types
from tests.conftest import cut_connection, recreate_behind_the_cache


def stored(topic_id, partition):
    return list(
        models.Record.objects.filter(topic_id=topic_id, partition=partition)
        .order_by("offset")
        .values_list("offset", "value", "key")
    )


def test_offsets_are_dense_per_partition(db, topic):
    results = [producer.send(topic.name, f"v{i}".encode(), partition=1) for i in range(5)]
    results += producer.send_batch(topic.name, [b"x", b"y"], partition=1)
    assert [r.offset for r in results] == [0, 1, 2, 3, 4, 5, 6]
    assert [o for o, _, _ in stored(topic.id, 1)] == list(range(7))


def test_keyed_records_use_kafkas_partition(db, topic):
    for key in ["21", "foobar", "abc", "order-17"]:
        meta = producer.send(topic.name, b"v", key=key)
        assert meta.partition == partitioner.partition_for_key(key.encode(), 3)


def test_json_and_bytes_values_and_headers_round_trip(db, topic):
    producer.send(topic.name, {"amount": 12, "items": ["a"]}, key="k", headers={"trace": "abc"}, partition=0)
    producer.send(topic.name, b"\x00\xff", partition=0)
    rows = storage.fetch_records(positions={(topic.id, 0): 0}, per_partition=10)
    assert [(r[2], bytes(r[4]), r[5], r[6]) for r in rows] == [
        (0, b'{"amount":12,"items":["a"]}', types.ValueFormat.JSON, {"trace": "abc"}),
        (1, b"\x00\xff", types.ValueFormat.BYTES, None),
    ]


def test_a_send_rolls_back_with_the_callers_transaction(db, topic):
    with pytest.raises(RuntimeError):
        with transaction.atomic():
            producer.send(topic.name, b"gone", partition=0)
            raise RuntimeError("business failure")
    assert stored(topic.id, 0) == []
    # The rolled-back offset is handed out again: no gap.
    assert producer.send(topic.name, b"kept", partition=0).offset == 0


def test_a_send_commits_with_the_callers_transaction(db, topic):
    from django.contrib.auth.models import Group

    with transaction.atomic():
        Group.objects.create(name="paid")
        producer.send(topic.name, b"event", partition=2)
    assert Group.objects.filter(name="paid").exists()
    assert [v for _, v, _ in stored(topic.id, 2)] == [b"event"]


def test_it_refuses_an_oversized_record(db):
    topics.create_topic("small", max_message_bytes=10)
    with pytest.raises(exceptions.MessageTooLarge):
        producer.send("small", b"x" * 11)
    assert producer.send("small", b"x" * 10).offset == 0


@pytest.mark.parametrize(
    "kwargs",
    [{"key": 1.5}, {"headers": {"a": 1}}, {"headers": ["a"]}, {"partition": 3}, {"partition": -1}],
)
def test_it_refuses_bad_input_and_stores_nothing(db, topic, kwargs):
    with pytest.raises(exceptions.QueueingError):
        producer.send(topic.name, b"v", **kwargs)
    assert not models.Record.objects.exists()


def test_it_refuses_an_unknown_topic(db):
    with pytest.raises(exceptions.TopicNotFound):
        producer.send("nope", b"v")


def test_a_value_that_is_not_json_serialisable_is_refused(db, topic):
    with pytest.raises(exceptions.InvalidArgument):
        producer.send(topic.name, object())


def test_an_idempotent_retry_after_a_lost_reply_is_stored_once(db, topic):
    sender = producer.Producer(idempotent=True)
    first = sender.send(topic.name, b"a", partition=0)
    records = [types.OutgoingRecord(key=None, value=b"b", value_format=0, headers=None)]
    # The first attempt of sequence 1 commits, but its reply is "lost": the producer sends again.
    original = storage.append_records(topic_id=topic.id, partition=0, records=records,
                                      producer_id=sender.producer_id, base_sequence=1)
    retried = storage.append_records(topic_id=topic.id, partition=0, records=records,
                                     producer_id=sender.producer_id, base_sequence=1)
    assert original == (1, False)
    assert retried == (1, True)
    assert [v for _, v, _ in stored(topic.id, 0)] == [b"a", b"b"]
    assert first.offset == 0


def test_an_idempotent_producer_refuses_gaps_and_old_sequences(db, topic):
    sender = producer.Producer(idempotent=True)
    sender.send_batch(topic.name, [b"a", b"b", b"c"], partition=0)  # sequences 0..2
    records = [types.OutgoingRecord(key=None, value=b"z", value_format=0, headers=None)]
    with pytest.raises(exceptions.OutOfOrderSequence):
        storage.append_records(topic_id=topic.id, partition=0, records=records,
                               producer_id=sender.producer_id, base_sequence=5)
    with pytest.raises(exceptions.DuplicateSequence):
        storage.append_records(topic_id=topic.id, partition=0, records=records,
                               producer_id=sender.producer_id, base_sequence=1)
    assert len(stored(topic.id, 0)) == 3


@pytest.mark.django_db(transaction=True)
def test_an_idempotent_producer_resends_after_the_connection_is_cut():
    topics.create_topic("cut", partitions=1)
    sender = producer.Producer(idempotent=True)
    sender.send("cut", b"0")
    cut_connection()
    meta = sender.send("cut", b"1")
    assert meta.offset == 1
    info = topics.get_topic("cut")
    assert [v for _, v, _ in stored(info.id, 0)] == [b"0", b"1"]


@pytest.mark.parametrize("acks,level", [("0", "off"), ("1", "local"), ("all", "on")])
def test_acks_set_the_commit_level_of_the_send(db, topic, acks, level):
    seen = []

    def spy(execute, sql, params, many, context):
        return execute(sql, params, many, context)

    with transaction.atomic():
        producer.send(topic.name, b"v", acks=acks, partition=0)
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_setting('synchronous_commit')")
            seen.append(cursor.fetchone()[0])
    # Inside the caller's transaction the send's level applies to that transaction's commit.
    assert seen == [level]


@pytest.mark.django_db(transaction=True)
def test_concurrent_threads_get_distinct_dense_offsets():
    topics.create_topic("threads", partitions=1)
    errors = []

    def run():
        try:
            for i in range(50):
                producer.send("threads", b"v", partition=0)
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    info = topics.get_topic("threads")
    assert [o for o, _, _ in stored(info.id, 0)] == list(range(200))


def test_a_large_batch_goes_in_by_copy_with_keys_headers_and_formats(db, topic):
    values = [{"n": i} if i % 2 else str(i).encode() for i in range(storage.log.COPY_FROM * 2)]
    sent = producer.send_batch(topic.name, values, keys=[f"k{i}" for i in range(len(values))],
                               headers={"h": "1"}, partition=2)
    assert [m.offset for m in sent] == list(range(len(values)))
    rows = storage.fetch_records(positions={(topic.id, 2): 0}, per_partition=1000)
    assert [r[2] for r in rows] == list(range(len(values)))
    assert rows[3][3:7] == (b"k3", b'{"n":3}', types.ValueFormat.JSON, {"h": "1"})
    assert rows[4][3:6] == (b"k4", b"4", types.ValueFormat.BYTES)
    assert len({r[7] for r in rows}) == 1  # one transaction, one timestamp
    assert producer.send(topic.name, b"after", partition=2).offset == len(values)


def test_an_idempotent_large_batch_is_stored_once(db, topic):
    sender = producer.Producer(idempotent=True)
    records = [types.OutgoingRecord(key=None, value=b"x", value_format=0, headers=None)] * storage.log.COPY_FROM
    sender._register()
    first = storage.append_records(topic_id=topic.id, partition=0, records=records,
                                   producer_id=sender.producer_id, base_sequence=0)
    again = storage.append_records(topic_id=topic.id, partition=0, records=records,
                                   producer_id=sender.producer_id, base_sequence=0)
    assert (first, again) == ((0, False), (0, True))
    assert len(stored(topic.id, 0)) == storage.log.COPY_FROM


# The caller's CTEs of send_selected in these tests: the records are a text array's elements, and a
# row of the caller's own (a producer's registration; any table would do) is written only while the
# partition exists.
SELECTED = """
written AS (
    INSERT INTO queueing_producer (client_id, created_at)
    SELECT %(client)s, now() WHERE EXISTS (SELECT FROM target)
), source AS (
    SELECT ordinality, convert_to(v, 'UTF8') AS value, 0::smallint AS value_format
      FROM unnest(%(values)s::text[]) WITH ORDINALITY AS u(v, ordinality)
)"""


def test_send_selected_appends_what_the_callers_statement_selects_after_its_writes(db, topic):
    producer.send(topic.name, b"before", partition=0)
    with transaction.atomic():
        [(partition, base, timestamp, appended)] = producer.send_selected(
            SELECTED, [{"client": "selected", "values": ["a", "b", "c"]}], topic.name, max_bytes=1)
    assert appended == 3
    offsets = [o for o, _, _ in stored(topic.id, partition)]
    assert offsets == list(range(offsets[-1] + 1))  # dense, after whatever was there
    assert [(o, bytes(v)) for o, v, _ in stored(topic.id, partition)[-3:]] == [
        (base, b"a"), (base + 1, b"b"), (base + 2, b"c")]
    assert models.Record.objects.filter(topic_id=topic.id, offset=base, partition=partition).get().timestamp == timestamp
    assert models.Producer.objects.filter(client_id="selected").count() == 1


def test_send_selected_refuses_records_larger_than_the_topics_limit_and_writes_nothing(db):
    small = topics.create_topic("small-records", partitions=1, max_message_bytes=4)
    with pytest.raises(exceptions.MessageTooLarge):
        producer.send_selected(SELECTED, [{"client": "too-large", "values": ["12345"]}], small.name, max_bytes=5)
    assert not models.Producer.objects.filter(client_id="too-large").exists()
    assert stored(small.id, 0) == []


def test_send_selected_writes_once_when_its_topic_was_recreated_behind_the_cache(db):
    topics.create_topic("recreated", partitions=1)
    fresh = recreate_behind_the_cache("recreated")
    with transaction.atomic():
        producer.send_selected(SELECTED, [{"client": "recreated", "values": ["x"]}, {"client": "recreated", "values": ["y"]}],
                               "recreated", max_bytes=1)
    assert [bytes(v) for _, v, _ in stored(fresh.id, 0)] == [b"x", b"y"]
    assert models.Producer.objects.filter(client_id="recreated").count() == 2  # the stale try wrote nothing


def test_send_selected_appends_nothing_and_locks_nothing_when_the_callers_writes_select_no_row(db, topic):
    empty = """written AS (SELECT 1 AS n WHERE EXISTS (SELECT FROM target) AND false),
source AS (SELECT 1 AS ordinality, '\\x00'::bytea AS value, 0::smallint AS value_format FROM written)"""
    [(partition, base, _, appended)] = producer.send_selected(empty, [{}], topic.name, max_bytes=1)
    assert (base, appended) == (None, 0)
    assert models.Partition.objects.get(topic_id=topic.id, number=partition).next_offset == 0


def test_send_selected_pipelines_batches_made_one_at_a_time_into_one_transaction(db, topic):
    made = []

    def batches():
        for n in range(3):
            made.append(n)
            yield {"client": f"pipelined-{n}", "values": [f"{n}a", f"{n}b"]}

    results = producer.send_selected(SELECTED, batches(), topic.name, max_bytes=2)
    assert made == [0, 1, 2] and [appended for *_, appended in results] == [2, 2, 2]
    [partition] = {p for p, *_ in results}
    assert [base for _, base, _, _ in results] == [results[0][1], results[0][1] + 2, results[0][1] + 4]
    assert len({timestamp for _, _, timestamp, _ in results}) == 1  # one transaction
    assert [bytes(v) for _, v, _ in stored(topic.id, partition)][-6:] == [b"0a", b"0b", b"1a", b"1b", b"2a", b"2b"]
    assert models.Producer.objects.filter(client_id__startswith="pipelined-").count() == 3


def test_send_selected_batches_commit_or_roll_back_together(db, topic):
    def batches():
        yield {"client": "doomed", "values": ["ok"]}
        yield {"client": None, "values": ["no"]}  # a producer row without its NOT NULL client id

    with pytest.raises(IntegrityError), transaction.atomic():
        producer.send_selected(SELECTED, batches(), topic.name, max_bytes=2)
    assert not models.Producer.objects.filter(client_id="doomed").exists()
    assert all(stored(topic.id, p) == [] for p in range(3))


def test_an_append_to_several_partitions_is_one_dense_run_each(db, topic):
    other = topics.create_topic("t.other", partitions=1)
    producer.send(topic.name, b"before", partition=2)

    def records(*values):
        return [types.OutgoingRecord(b"k", value, types.ValueFormat.BYTES, {"h": value.decode()}) for value in values]

    with transaction.atomic():
        producer.append_partitions([(topic.name, 2, records(b"a", b"b")), (other.name, 0, records(b"c")),
                                    (topic.name, 0, records(b"d", b"e", b"f"))])
    assert [(o, bytes(v)) for o, v, _ in stored(topic.id, 2)] == [(0, b"before"), (1, b"a"), (2, b"b")]
    assert [(o, bytes(v)) for o, v, _ in stored(topic.id, 0)] == [(0, b"d"), (1, b"e"), (2, b"f")]
    assert [(o, bytes(v)) for o, v, _ in stored(other.id, 0)] == [(0, b"c")]
    assert storage.fetch_records(positions={(other.id, 0): 0}, per_partition=5)[0][3:7] == (
        b"k", b"c", types.ValueFormat.BYTES, {"h": "c"})


def test_a_large_batch_among_several_partitions_goes_in_by_copy(db, topic):
    large = [str(i).encode() for i in range(storage.log.COPY_FROM)]

    def records(values):
        return [types.OutgoingRecord(b"k", value, types.ValueFormat.BYTES, {"h": "1"}) for value in values]

    with transaction.atomic():
        bases = storage.append_partitions({(topic.id, 0): records([b"x"]), (topic.id, 1): records(large)})
        assert bases == {(topic.id, 0): 0, (topic.id, 1): 0}
        producer.append_partitions([(topic.name, 1, records([b"after"])), (topic.name, 0, records(large))])
    assert [bytes(v) for _, v, _ in stored(topic.id, 1)] == [*large, b"after"]
    assert [bytes(v) for _, v, _ in stored(topic.id, 0)] == [b"x", *large]
    rows = storage.fetch_records(positions={(topic.id, 1): 0}, per_partition=1000)
    assert [r[2] for r in rows] == list(range(len(large) + 1)) and rows[0][6] == {"h": "1"}
    assert len({r[7] for r in rows}) == 1  # one transaction, one timestamp


def test_an_append_to_several_partitions_refuses_a_bad_one_before_writing(db, topic):
    fine = [types.OutgoingRecord(None, b"x", types.ValueFormat.BYTES, None)]
    with pytest.raises(exceptions.PartitionNotFound):
        producer.append_partitions([(topic.name, 0, fine), (topic.name, 3, fine)])
    with pytest.raises(exceptions.PartitionNotFound):  # the topic says 3, the table lost one
        with transaction.atomic():
            models.Partition.objects.filter(topic_id=topic.id, number=1).delete()
            storage.append_partitions({(topic.id, 0): fine, (topic.id, 1): fine})
    assert stored(topic.id, 0) == []
