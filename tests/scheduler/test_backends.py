"""Django's tasks framework on Sluice (scheduler.backends.SluiceBackend)."""
import datetime
import time

import pytest
from django.db import transaction
from django.tasks import TaskResultStatus, task_backends
from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
from django.utils import timezone

from scheduler import models, worker
from tests.sampleapp import django_tasks


@pytest.fixture(autouse=True)
def fast(settings):
    settings.SLUICE = {**settings.SLUICE, "POLL_FALLBACK_MS": 50}


def test_sluice_is_the_projects_tasks_backend():
    assert type(task_backends["default"]).__name__ == "SluiceBackend"


def test_enqueue_stores_a_sluice_task_and_returns_a_ready_result(db):
    result = django_tasks.multiply.enqueue(6, 7)
    assert (result.status, result.args, result.attempts) == (TaskResultStatus.READY, [6, 7], 0)
    row = models.TaskResult.objects.get(id=result.id)
    assert (row.task_name, row.queue, row.state) == ("tests.sampleapp.django_tasks.multiply", "sample", "queued")
    again = django_tasks.multiply.get_result(result.id)
    assert (again.id, again.status, again.enqueued_at) == (result.id, TaskResultStatus.READY, row.enqueued_at)


def test_the_enqueue_rolls_back_with_the_callers_transaction(db):
    with pytest.raises(RuntimeError), transaction.atomic():
        django_tasks.multiply.enqueue(1, 2)
        raise RuntimeError("rolled back")
    assert not models.TaskResult.objects.exists()


def test_run_after_schedules_and_queue_name_and_priority_are_checked(db):
    later = timezone.now() + datetime.timedelta(minutes=5)
    result = django_tasks.multiply.using(run_after=later, queue_name="other").enqueue(1, 2)
    row = models.TaskResult.objects.get(id=result.id)
    assert (row.state, row.eta, row.queue) == ("scheduled", later, "other")
    urgent = django_tasks.multiply.using(priority=10).enqueue(1, 2)
    assert models.TaskResult.objects.get(id=urgent.id).priority == 10  # in the queue's band 10
    with pytest.raises(InvalidTask):
        django_tasks.multiply.using(priority=101)  # Django's own range check


def test_an_unknown_result_does_not_exist(db):
    with pytest.raises(TaskResultDoesNotExist):
        task_backends["default"].get_result("not-an-id")


@pytest.mark.django_db(transaction=True)
def test_a_worker_runs_django_tasks_and_their_results_read_back():
    done, context, failed = (django_tasks.multiply.enqueue(6, 7), django_tasks.which_run.enqueue("x"),
                             django_tasks.explode.enqueue())
    loop = worker.TaskWorker("sample", poll_timeout=0.1)
    deadline = time.monotonic() + 60
    try:
        while not all(models.TaskResult.objects.get(id=r.id).state in models.FINISHED for r in (done, context, failed)):
            assert time.monotonic() < deadline, "tasks did not finish"
            loop.run_once()
    finally:
        loop.stop()
        loop.close()
    for result in (done, context, failed):
        result.refresh()
    assert (done.status, done.return_value, done.attempts) == (TaskResultStatus.SUCCESSFUL, 42, 1)
    assert context.return_value == {"label": "x", "attempt": 1, "id": context.id}
    assert failed.status == TaskResultStatus.FAILED
    assert [e.exception_class for e in failed.errors] == [LookupError]
    assert "nothing here" in failed.errors[0].traceback
