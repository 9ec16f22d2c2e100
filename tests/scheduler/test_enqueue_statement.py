"""A single enqueue is one statement in the caller's transaction: the task's row and its record."""
import json

import pytest
from django.db import transaction

from queueing import models as engine_models, producer, topics
from scheduler import exceptions, models, tasks
from tests.conftest import recreate_behind_the_cache, statements
from tests.sampleapp import tasks as sample


def records(topic):
    info = topics.get_topic(topic)
    return list(engine_models.Record.objects.filter(topic_id=info.id).order_by("partition", "offset"))


# transaction=True: the first enqueue's topic is committed (a topic created by the open
# transaction is not cached until it commits).
@pytest.mark.django_db(transaction=True)
def test_a_single_enqueue_is_one_statement():
    sample.add.enqueue(0, b=0)  # the topic is created and cached on first use
    with transaction.atomic():
        sent = statements(lambda: sample.add.enqueue(1, b=2))
    assert len(sent) == 1, sent
    assert "SAVEPOINT" not in sent[0]


@pytest.mark.parametrize("unique_key", [None, "k"], ids=["plain", "with a unique key"])
def test_a_single_enqueue_writes_the_row_and_its_record_together(db, unique_key):
    """Both statements (enqueue_one, and enqueue_task for a unique key) write the same row and the
    record a send would, and count its bytes in the partition's size."""
    with transaction.atomic():
        result = sample.add.using(unique_key=unique_key).enqueue(2, b=3)
    row = models.TaskResult.objects.get(id=result.id)
    assert (row.state, row.args, row.kwargs, row.unique_key) == ("queued", [2], {"b": 3}, unique_key)
    [record] = records(tasks.topic_for("sample"))
    value = {"id": str(result.id), "task": "tests.sampleapp.tasks.add", "generation": 1}
    assert bytes(record.value) == producer.encode_value(value)[0]
    assert row.enqueued_at == result.row.enqueued_at == record.timestamp
    partition = engine_models.Partition.objects.get(topic_id=record.topic_id, number=record.partition)
    assert (partition.next_offset, partition.size_bytes) == (record.offset + 1, len(bytes(record.value)))


# transaction=True: the first enqueue's topic is committed (a topic created by the open
# transaction is not cached until it commits).
@pytest.mark.django_db(transaction=True)
def test_a_priority_enqueue_is_one_statement_to_its_band():
    urgent = sample.add.using(priority=10)
    urgent.enqueue(0, b=0)
    with transaction.atomic():
        sent = statements(lambda: urgent.enqueue(1, b=1))
    assert len(sent) == 1, sent
    assert len(records(tasks.topic_for("sample", 10))) == 2
    assert models.TaskResult.objects.filter(priority=10).count() == 2


def test_a_taken_unique_key_raises_and_leaves_the_callers_transaction_usable(db):
    keyed = sample.add.using(unique_key="only-one")
    first = keyed.enqueue(1, b=1)
    with transaction.atomic():
        with pytest.raises(exceptions.AlreadyEnqueued) as taken:
            keyed.enqueue(2, b=2)
        assert taken.value.data["unique_key"] == "only-one"
        sample.add.enqueue(3, b=3)  # the transaction still works: no savepoint was needed
    assert list(models.TaskResult.objects.filter(unique_key="only-one").values_list("id", flat=True)) == [first.id]
    assert len(records(tasks.topic_for("sample"))) == 2


def test_a_rolled_back_enqueue_leaves_no_row_and_no_record(db):
    sample.add.enqueue(0, b=0)
    with pytest.raises(RuntimeError):
        with transaction.atomic():
            sample.add.enqueue(1, b=1)
            raise RuntimeError("the caller's transaction fails")
    assert models.TaskResult.objects.count() == 1
    assert len(records(tasks.topic_for("sample"))) == 1


def test_a_single_enqueue_keeps_its_concurrency_key(db):
    limited = sample.add.using(concurrency_key="k", concurrency_limit=2)
    result = limited.enqueue(1, b=1)
    row = models.TaskResult.objects.get(id=result.id)
    assert (row.concurrency_key, row.concurrency_limit) == ("k", 2)


def test_a_single_enqueue_survives_its_topic_recreated_behind_the_cache(db):
    """Guards send_one_selected's retry: a cached topic id that no longer exists must not leave a task
    row without its record."""
    sample.add.enqueue(0, b=0)
    name = tasks.topic_for("sample")
    recreate_behind_the_cache(name)
    with transaction.atomic():
        result = sample.add.enqueue(1, b=1)
    [record] = records(name)
    assert json.loads(bytes(record.value))["id"] == str(result.id)
    assert models.TaskResult.objects.filter(id=result.id).exists()


def test_enqueue_many_without_unique_keys_takes_no_savepoint(db):
    sample.add.enqueue_many([((0,), {"b": 0})])
    with transaction.atomic():
        sent = statements(lambda: sample.add.enqueue_many([((n,), {"b": n}) for n in range(3)]))
    assert not [query for query in sent if "SAVEPOINT" in query.upper()], sent
    assert models.TaskResult.objects.count() == 4
    assert len(records(tasks.topic_for("sample"))) == 4


def test_enqueue_many_with_a_taken_unique_key_leaves_the_callers_transaction_usable(db):
    sample.add.using(unique_key="batch").enqueue(1, b=1)
    with transaction.atomic():
        with pytest.raises(exceptions.AlreadyEnqueued):
            sample.add.using(unique_key="batch").enqueue_many([((2,), {"b": 2})])
        sample.add.enqueue(3, b=3)
    assert models.TaskResult.objects.count() == 2


# transaction=True: the first enqueue's topic is committed (a topic created by the open
# transaction is not cached until it commits).
@pytest.mark.django_db(transaction=True)
def test_enqueue_many_is_one_statement_and_writes_the_records_a_send_would():
    sample.add.enqueue(0, b=0)
    calls = [((n, "é\"\\"), {"b": [n]}) for n in range(1, tasks.ENQUEUE_CHUNK + 1)]
    with transaction.atomic():
        sent = statements(lambda: sample.add.enqueue_many(calls))
    assert len(sent) == 1, sent
    # More than a chunk: a statement a chunk, pipelined, in the same transaction.
    calls += [((n, "é\"\\"), {"b": [n]}) for n in range(tasks.ENQUEUE_CHUNK + 1, 3 * tasks.ENQUEUE_CHUNK + 1)]
    with transaction.atomic():
        sample.add.enqueue_many(calls[tasks.ENQUEUE_CHUNK:])
    rows = {str(r.id): r for r in models.TaskResult.objects.filter(args__0__gt=0)}
    assert len(rows) == len(calls)
    written = [r for r in records(tasks.topic_for("sample")) if json.loads(bytes(r.value))["id"] in rows]
    assert len(written) == len(calls)
    for record in written:
        value = json.loads(bytes(record.value))
        assert bytes(record.value) == producer.encode_value(value)[0]  # byte for byte what a send stores
        assert value == {"id": value["id"], "task": "tests.sampleapp.tasks.add", "generation": 1}
        row = rows[value["id"]]
        assert (row.state, row.kwargs, row.enqueued_at) == ("queued", {"b": [row.args[0]]}, record.timestamp)
    # Each call in call order, with dense offsets, in one partition (one batch).
    for first, last in ((1, tasks.ENQUEUE_CHUNK), (tasks.ENQUEUE_CHUNK + 1, len(calls))):
        batch = [r for r in written if first <= rows[json.loads(bytes(r.value))["id"]].args[0] <= last]
        assert len({r.partition for r in batch}) == 1
        assert [rows[json.loads(bytes(r.value))["id"]].args[0] for r in batch] == list(range(first, last + 1))
        assert [r.offset for r in batch] == list(range(batch[0].offset, batch[0].offset + len(batch)))


def test_enqueue_many_survives_its_topic_recreated_behind_the_cache(db):
    sample.add.enqueue(0, b=0)
    name = tasks.topic_for("sample")
    recreate_behind_the_cache(name)
    with transaction.atomic():
        results = sample.add.enqueue_many([((n,), {"b": n}) for n in range(1, 4)])
    assert sorted(json.loads(bytes(r.value))["id"] for r in records(name)) == sorted(str(r.id) for r in results)
    assert models.TaskResult.objects.filter(id__in=[r.id for r in results]).count() == 3
