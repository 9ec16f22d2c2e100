import datetime
import uuid

import pytest
from django.utils import timezone

from scheduler import control, exceptions, models, results
from tests.sampleapp import tasks as sample


def test_a_result_is_read_by_id_from_anywhere(db):
    enqueued = sample.add.enqueue(1, 2)
    read = results.get(str(enqueued.id))
    assert (read.id, read.state, read.finished, read.progress, read.error) == (enqueued.id, "queued", False, None, None)
    with pytest.raises(ValueError):
        read.return_value


@pytest.mark.parametrize("task_id", [uuid.uuid4(), "not-a-uuid"])
def test_an_unknown_task_is_not_found(db, task_id):
    with pytest.raises(exceptions.TaskNotFound):
        results.get(task_id)


def test_wait_gives_up_after_its_timeout(db):
    result = sample.add.enqueue(1, 2)
    with pytest.raises(exceptions.ResultTimeout) as late:
        result.wait(timeout=0.1)
    assert "queued" in str(late.value)


def test_wait_returns_once_the_task_finished(db):
    result = sample.add.enqueue(1, 2)
    models.TaskResult.objects.filter(id=result.id).update(state="succeeded", return_value=3,
                                                           finished_at=timezone.now())
    assert result.wait(timeout=5).return_value == 3


def finish(result, state, ago):
    models.TaskResult.objects.filter(id=result.id).update(state=state,
                                                           finished_at=timezone.now() - datetime.timedelta(seconds=ago))


def test_prune_deletes_only_tasks_finished_longer_ago_than_kept(db, settings):
    settings.SLUICE = {**settings.SLUICE, "TASK_RESULT_TTL_S": 3600}
    old = [sample.add.enqueue(i, i) for i in range(5)]
    for result in old:
        finish(result, "succeeded", 7200)
        models.TaskAttempt.objects.create(task_id=result.id, number=1, worker="w", outcome="succeeded")
    recent, waiting = sample.add.enqueue(0, 0), sample.add.enqueue(0, 1)
    finish(recent, "failed", 60)
    assert control.prune(limit=2) == 5  # in batches of two
    assert set(models.TaskResult.objects.values_list("id", flat=True)) == {recent.id, waiting.id}
    assert not models.TaskAttempt.objects.exists()
