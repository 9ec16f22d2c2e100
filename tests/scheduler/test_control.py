import pytest

from queueing import models as engine_models, topics
from scheduler import control, exceptions, models
from tests.sampleapp import tasks as sample


def test_cancel_a_queued_task(db):
    result = sample.add.enqueue(1, 2)
    cancelled = control.cancel(result.id)
    assert cancelled.state == "cancelled" and cancelled.finished and cancelled.row.finished_at is not None


def test_cancel_a_scheduled_task_removes_its_delayed_record(db):
    result = sample.add.using(countdown=600).enqueue(1, 2)
    control.cancel(result.id)
    assert not engine_models.DelayedRecord.objects.exists()
    assert result.refresh().state == "cancelled"


@pytest.mark.parametrize("state", ["running", "succeeded", "failed", "cancelled"])
def test_only_a_task_that_has_not_started_can_be_cancelled(db, state):
    result = sample.add.enqueue(1, 2)
    models.TaskResult.objects.filter(id=result.id).update(state=state)
    with pytest.raises(exceptions.NotCancellable) as refused:
        control.cancel(result.id)
    assert state in str(refused.value)
    assert result.refresh().state == state


def test_retry_enqueues_a_failed_task_again_with_fresh_attempts(db):
    result = sample.add.enqueue(1, 2)
    models.TaskResult.objects.filter(id=result.id).update(state="failed", failures=3, lost=1)
    again = control.retry(result.id)
    assert (again.state, again.row.failures, again.row.lost, again.row.finished_at) == ("queued", 0, 0, None)
    assert engine_models.Record.objects.filter(topic_id=topics.get_topic("tasks.sample").id).count() == 2


def test_retry_refuses_a_task_still_to_finish(db):
    result = sample.add.enqueue(1, 2)
    with pytest.raises(exceptions.NotRetryable):
        control.retry(result.id)


def test_retry_refuses_when_the_unique_key_was_taken_again(db):
    first = sample.add.using(unique_key="k").enqueue(1, 2)
    control.cancel(first.id)
    sample.add.using(unique_key="k").enqueue(1, 2)
    with pytest.raises(exceptions.AlreadyEnqueued):
        control.retry(first.id)
    assert first.refresh().state == "cancelled"


def test_control_of_an_unknown_task_says_so(db):
    with pytest.raises(exceptions.TaskNotFound):
        control.cancel("00000000-0000-0000-0000-000000000000")
