import datetime
import json

import pytest
from django.db import transaction
from django.utils import timezone

from queueing import models as engine_models, topics
from scheduler import exceptions, models, tasks
from tests.sampleapp import tasks as sample


def records(queue="sample"):
    info = topics.get_topic(tasks.topic_for(queue))
    return [r for r in engine_models.Record.objects.filter(topic_id=info.id).order_by("partition", "offset")]


def test_the_decorator_registers_a_task_with_its_defaults():
    definition = tasks.get("tests.sampleapp.tasks.flaky")
    assert definition is sample.flaky
    assert (definition.queue, definition.retry.max_attempts, definition.retry.retry_on) == ("sample", 3, (ConnectionError,))
    assert definition.takes_context
    assert sample.add(2, 3) == 5  # still a plain function when called


def test_enqueue_stores_the_task_and_appends_its_record(db):
    result = sample.add.enqueue(2, b=3)
    row = models.TaskResult.objects.get(id=result.id)
    assert (row.task_name, row.queue, row.args, row.kwargs, row.state) == (
        "tests.sampleapp.tasks.add", "sample", [2], {"b": 3}, "queued")
    assert row.enqueued_at is not None
    [record] = records()
    assert json.loads(bytes(record.value)) == {"id": str(result.id), "task": "tests.sampleapp.tasks.add", "generation": 1}


def test_a_queues_topic_is_created_on_first_use_with_the_task_retention(db, settings):
    settings.SLUICE = {**settings.SLUICE, "TASK_PARTITIONS": 2, "TASK_TOPIC_RETENTION_MS": 3_600_000}
    sample.add.using(queue="fresh").enqueue(1, 2)
    info = topics.get_topic("tasks.fresh")
    assert (info.partition_count, info.retention_ms) == (2, 3_600_000)


def test_an_enqueue_rolls_back_with_the_callers_transaction(db):
    tasks.ensure_queue("sample")
    with pytest.raises(RuntimeError), transaction.atomic():
        sample.add.enqueue(1, 1)
        raise RuntimeError("the business transaction fails")
    assert not models.TaskResult.objects.exists()
    assert records() == []


@pytest.mark.parametrize("args, kwargs, reason", [
    (({1, 2},), {}, "set"),
    ((float("nan"),), {}, "finite"),
    (({1: "a"},), {}, "key 1"),
    ((), {"when": datetime.date(2026, 1, 1)}, "date"),
    (([object()],), {}, "object"),
])
def test_arguments_that_are_not_json_are_refused_and_nothing_is_stored(db, args, kwargs, reason):
    with pytest.raises(exceptions.NotJSON) as refused:
        sample.add.enqueue(*args, **kwargs)
    assert reason in str(refused.value) and "tests.sampleapp.tasks.add" in str(refused.value)
    assert not models.TaskResult.objects.exists()


def test_a_countdown_schedules_the_task_as_a_delayed_record(db):
    result = sample.add.using(countdown=60).enqueue(1, 2)
    row = result.row
    assert row.state == "scheduled" and result.state == "scheduled"
    assert row.eta > timezone.now() + datetime.timedelta(seconds=50)
    waiting = engine_models.DelayedRecord.objects.get(id=row.delayed_id)
    assert waiting.deliver_at == row.eta
    assert records() == []  # not in the log before its time


def test_a_scheduled_task_whose_time_came_reads_as_queued(db):
    result = sample.add.using(countdown=60).enqueue(1, 2)
    models.TaskResult.objects.filter(id=result.id).update(eta=timezone.now() - datetime.timedelta(seconds=1))
    assert result.refresh().state == "queued"


def test_using_overrides_the_queue_and_the_eta_for_one_call(db):
    eta = timezone.now() + datetime.timedelta(hours=1)
    result = sample.add.using(queue="urgent", eta=eta).enqueue(1, 2)
    assert (result.row.queue, result.row.eta, result.row.state) == ("urgent", eta, "scheduled")
    assert sample.add.queue == "sample"  # the definition is unchanged
    past = sample.add.using(eta=timezone.now() - datetime.timedelta(seconds=5)).enqueue(1, 2)
    assert past.row.state == "queued"  # an ETA already past runs now


def test_bad_overrides_are_refused(db):
    with pytest.raises(exceptions.InvalidTask):
        sample.add.using(countdown=1, eta=timezone.now()).enqueue(1, 2)
    with pytest.raises(exceptions.InvalidTask):
        sample.add.using(eta=datetime.datetime(2030, 1, 1)).enqueue(1, 2)  # naive
    with pytest.raises(exceptions.InvalidTask):
        sample.add.using(countdown=400 * 86400).enqueue(1, 2)
    with pytest.raises(exceptions.InvalidTask):
        sample.add.using(queue="no spaces")
    assert not models.TaskResult.objects.exists()


def test_a_unique_key_refuses_a_second_task_until_the_first_is_finished(db):
    first = sample.add.using(unique_key="report:7").enqueue(1, 2)
    with pytest.raises(exceptions.AlreadyEnqueued):
        sample.add.using(unique_key="report:7").enqueue(1, 2)
    assert models.TaskResult.objects.count() == 1
    models.TaskResult.objects.filter(id=first.id).update(state="succeeded")
    sample.add.using(unique_key="report:7").enqueue(1, 2)
    assert models.TaskResult.objects.count() == 2


def test_a_unique_key_may_be_a_function_of_the_arguments(db):
    keyed = tasks.task(sample.add.func, name="keyed_add", queue="sample",
                       unique_key=lambda args, kwargs: f"add:{args[0]}")
    keyed.enqueue(1, 2)
    keyed.enqueue(2, 2)
    with pytest.raises(exceptions.AlreadyEnqueued):
        keyed.enqueue(1, 5)


def test_enqueue_many_stores_thousands_in_one_call(db):
    results = sample.add.enqueue_many(((i, i), {}) for i in range(5000))
    assert len(results) == 5000 and len({r.id for r in results}) == 5000
    assert models.TaskResult.objects.filter(state="queued").count() == 5000
    info = topics.get_topic(tasks.topic_for("sample"))
    assert engine_models.Record.objects.filter(topic_id=info.id).count() == 5000
    row = models.TaskResult.objects.get(id=results[4321].id)
    assert (row.args, row.kwargs, row.attempts, row.enqueued_at) == ([4321, 4321], {}, 0, results[4321].row.enqueued_at)


def test_enqueue_many_refuses_a_batch_with_a_unique_key_taken(db):
    sample.add.using(unique_key="k-70").enqueue(0, 0)
    keyed = tasks.task(sample.add.func, name="keyed_many", queue="sample",
                       unique_key=lambda args, kwargs: f"k-{args[0]}")
    with pytest.raises(exceptions.AlreadyEnqueued) as taken:
        keyed.enqueue_many(((i, 0), {}) for i in range(100))
    assert str(taken.value) == "A task with unique key 'k-70' is already queued, scheduled or running."
    assert models.TaskResult.objects.count() == 1


@pytest.mark.parametrize("options", [
    {"max_attempts": 0}, {"retry_on": (int,)}, {"soft_time_limit": -1}, {"queue": "a b"},
    {"backoff_levels_s": ("soon",)}, {"unique_key": 7},
])
def test_invalid_definitions_are_refused(options):
    with pytest.raises(exceptions.InvalidTask):
        tasks.task(print, name="invalid", **options)


def test_retry_on_takes_one_exception_class_and_the_time_limits_must_be_in_order():
    from scheduler import task

    def job():
        pass

    from scheduler import tasks

    one = task(job, name="tests.retry_on_one", retry_on=ValueError, max_attempts=2)
    tasks._registry.pop(one.name)  # this process's workers in other tests must not import this module
    assert one.retry.retries(ValueError()) and not one.retry.retries(KeyError())
    for options, reason in [
        ({"retry_on": 3}, "retry_on must be a tuple of exception classes"),
        ({"retry_on": [ValueError, "KeyError"]}, "retry_on must be a tuple of exception classes"),
        ({"soft_time_limit": 5, "hard_time_limit": 1}, "soft_time_limit must be shorter than hard_time_limit"),
        ({"soft_time_limit": 2, "hard_time_limit": 2}, "soft_time_limit must be shorter than hard_time_limit"),
    ]:
        with pytest.raises(exceptions.InvalidTask) as refused:
            task(job, name="tests.refused", **options)
        assert reason in str(refused.value), options
