"""Django's tasks framework on Sluice (scheduler.backends.SluiceBackend): enqueue and results read
back, the mapping of Sluice's states, errors, attempts and values onto Django's TaskResult, and the
signals sent by the worker's process that runs a task (its tasks run in real child processes)."""
import datetime
import json
import os
import time

import pytest
from asgiref.sync import async_to_sync
from django.db import connection, transaction
from django.tasks import TaskResultStatus, task_backends
from django.tasks.backends.dummy import DummyBackend
from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
from django.utils import timezone

from queueing import delayed, share
from scheduler import control, models, worker
from tests.conftest import ROOT
from tests.sampleapp import django_tasks

WORKER_RUN = "scheduler.backends.SluiceBackend"


@pytest.fixture(autouse=True)
def fast(settings):
    settings.SLUICE = {**settings.SLUICE, "POLL_FALLBACK_MS": 50}


@pytest.fixture
def signal_log(tmp_path, monkeypatch):
    """The file the sample app's receivers append the signals to (in the worker's child processes,
    which inherit the environment)."""
    path = tmp_path / "signals.jsonl"
    monkeypatch.setenv("SAMPLE_SIGNAL_LOG", str(path))

    def read():
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    return read


def run_until_finished(*results, timeout=60):
    """Step a worker of queue sample until every result is finished; bounded, never timed."""
    loop = worker.TaskWorker("sample", poll_timeout=0.1)
    deadline = time.monotonic() + timeout
    try:
        while not all(models.TaskResult.objects.get(id=r.id).state in models.FINISHED for r in results):
            assert time.monotonic() < deadline, "tasks did not finish"
            delayed.move_due()  # what serve's mover does: a deferred task's record enters the log when due
            loop.run_once()
    finally:
        loop.stop()
        loop.close()
    for result in results:
        result.refresh()
    return loop


def test_sluice_is_the_projects_tasks_backend_and_says_what_it_supports():
    backend = task_backends["default"]
    assert type(backend).__name__ == "SluiceBackend"
    assert (backend.supports_defer, backend.supports_get_result, backend.supports_async_task,
            backend.supports_priority) == (True, True, True, True)


def test_enqueue_stores_a_sluice_task_and_returns_a_ready_result(db):
    result = django_tasks.multiply.enqueue(6, 7)
    assert (result.status, result.args, result.attempts, result.worker_ids) == (TaskResultStatus.READY, [6, 7], 0, [])
    row = models.TaskResult.objects.get(id=result.id)
    assert (row.task_name, row.queue, row.state) == ("tests.sampleapp.django_tasks.multiply", "sample", "queued")
    again = django_tasks.multiply.get_result(result.id)
    assert (again.id, again.status, again.enqueued_at, again.finished_at) == (result.id, TaskResultStatus.READY,
                                                                              row.enqueued_at, None)
    with pytest.raises(ValueError, match="not finished"):
        again.return_value


def test_the_enqueue_rolls_back_with_the_callers_transaction(db):
    with pytest.raises(RuntimeError), transaction.atomic():
        django_tasks.multiply.enqueue(1, 2)
        raise RuntimeError("rolled back")
    assert not models.TaskResult.objects.exists()


def test_arguments_that_are_not_json_raise_type_error_as_djangos_own_backends_do(db):
    dummy = DummyBackend("dummy", {"QUEUES": []})
    with pytest.raises(TypeError):
        dummy.enqueue(django_tasks.multiply, ({1, 2},), {})
    with pytest.raises(TypeError):
        django_tasks.multiply.enqueue({1, 2}, 3)
    assert not models.TaskResult.objects.exists()
    result = django_tasks.multiply.enqueue((1, 2), b=(3,))  # tuples normalised to lists, as Django does
    assert (result.args, result.kwargs) == ([[1, 2]], {"b": [3]})
    assert models.TaskResult.objects.get(id=result.id).args == [[1, 2]]


def test_run_after_makes_a_scheduled_task_that_reads_back_with_it(db):
    later = timezone.now() + datetime.timedelta(minutes=5)
    result = django_tasks.multiply.using(run_after=later, queue_name="other").enqueue(1, 2)
    row = models.TaskResult.objects.get(id=result.id)
    assert (row.state, row.eta, row.queue) == ("scheduled", later, "other")
    again = task_backends["default"].get_result(result.id)
    assert (again.status, again.task.run_after, again.task.queue_name) == (TaskResultStatus.READY, later, "other")


@pytest.mark.django_db(transaction=True)
def test_a_deferred_task_runs_only_once_its_run_after_came():
    run_after = timezone.now() + datetime.timedelta(seconds=1.5)
    result = django_tasks.multiply.using(run_after=run_after).enqueue(2, 3)
    run_until_finished(result)
    assert (result.status, result.return_value) == (TaskResultStatus.SUCCESSFUL, 6)
    assert result.started_at >= run_after


def test_a_priority_is_kept_and_reads_back(db):
    urgent = django_tasks.multiply.using(priority=10).enqueue(1, 2)
    assert models.TaskResult.objects.get(id=urgent.id).priority == 10  # in the queue's band 10
    assert task_backends["default"].get_result(urgent.id).task.priority == 10
    with pytest.raises(InvalidTask):
        django_tasks.multiply.using(priority=101)  # Django's own range check


def test_queue_names_are_validated_against_queues(settings):
    settings.TASKS = {"default": {"BACKEND": WORKER_RUN, "QUEUES": ["sample", "default"]}}
    assert django_tasks.multiply.using(queue_name="default").queue_name == "default"
    with pytest.raises(InvalidTask, match="Queue 'other' is not valid"):
        django_tasks.multiply.using(queue_name="other")


def test_a_queue_name_sluice_cannot_use_is_refused_and_reported_by_the_check(settings):
    with pytest.raises(InvalidTask, match="invalid queue name"):
        django_tasks.multiply.using(queue_name="no spaces")
    settings.TASKS = {"default": {"BACKEND": WORKER_RUN, "QUEUES": ["fine", "not fine"]}}
    assert [e.id for e in task_backends["default"].check()] == ["sluice.E101"]


def test_an_unknown_result_does_not_exist(db):
    with pytest.raises(TaskResultDoesNotExist):
        task_backends["default"].get_result("not-an-id")
    with pytest.raises(TaskResultDoesNotExist):
        task_backends["default"].get_result("00000000-0000-0000-0000-000000000000")


def test_a_cancelled_task_reads_as_failed_with_its_cancellation_as_the_error(db):
    result = django_tasks.multiply.enqueue(1, 2)
    control.cancel(result.id)
    result.refresh()
    assert (result.status, result.is_finished, result.attempts) == (TaskResultStatus.FAILED, True, 0)
    assert [e.exception_class_path for e in result.errors] == ["scheduler.exceptions.TaskCancelled"]
    assert result.errors[0].exception_class.__name__ == "TaskCancelled"
    assert result.finished_at is not None
    with pytest.raises(ValueError, match="Task failed"):
        result.return_value


def test_a_sluice_task_reads_back_through_the_backend_too(db):
    """Its Django Task is made for it with every field named: Django 6.0's Task has no defaults for
    priority and run_after (6.1 added them)."""
    from tests.sampleapp import tasks as sample

    sluice = sample.add.enqueue(1, 2)
    result = task_backends["default"].get_result(str(sluice.id))
    assert (result.status, result.args, result.task.queue_name, result.task.priority) == (
        TaskResultStatus.READY, [1, 2], "sample", 0)


def test_aenqueue_and_aget_result_work_through_djangos_defaults(db):
    async def enqueue_then_read():
        result = await django_tasks.multiply.aenqueue(3, 4)
        return result, await django_tasks.multiply.aget_result(result.id)

    result, again = async_to_sync(enqueue_then_read)()
    assert (again.id, again.status, again.args) == (result.id, TaskResultStatus.READY, [3, 4])
    assert models.TaskResult.objects.get(id=result.id).task_name == "tests.sampleapp.django_tasks.multiply"


def outline(result):
    """What a backend's result says of a run, its ids and times aside."""
    value = result.return_value if result.status == TaskResultStatus.SUCCESSFUL else None
    return result.status, value, [e.exception_class_path for e in result.errors], result.attempts


@pytest.mark.django_db(transaction=True)
def test_a_worker_runs_django_tasks_and_their_results_read_back(signal_log, settings):
    done, context, failed, pid, shaped, async_result, bad = (
        django_tasks.multiply.enqueue(6, 7), django_tasks.which_run.enqueue("x"), django_tasks.explode.enqueue(),
        django_tasks.where.enqueue(), django_tasks.shapes.enqueue(), django_tasks.sleep_then_echo.enqueue("hi"),
        django_tasks.not_json.enqueue())
    loop = run_until_finished(done, context, failed, pid, shaped, async_result, bad)
    assert (done.status, done.return_value, done.attempts, done.worker_ids) == (
        TaskResultStatus.SUCCESSFUL, 42, 1, [loop.worker_id])
    row = models.TaskResult.objects.get(id=done.id)
    attempt = models.TaskAttempt.objects.get(task_id=done.id)
    assert (done.started_at, done.finished_at, done.last_attempted_at) == (row.started_at, row.finished_at,
                                                                           attempt.started_at)
    assert done.errors == []
    assert context.return_value == {"label": "x", "attempt": 1, "id": context.id}
    assert failed.status == TaskResultStatus.FAILED
    assert [e.exception_class for e in failed.errors] == [LookupError]
    assert "nothing here" in failed.errors[0].traceback and "Traceback" in failed.errors[0].traceback
    with pytest.raises(ValueError, match="Task failed"):
        failed.return_value
    assert shaped.return_value == {"pair": [1, 2], "nested": [{"x": 1.5}, None, True], "text": "é"}
    assert async_result.return_value == {"echo": "hi", "ran_in_a_loop": True}
    assert (bad.status, [e.exception_class_path for e in bad.errors]) == (
        TaskResultStatus.FAILED, ["scheduler.exceptions.NotJSON"])

    signals = {(s["id"], s["signal"]): s for s in signal_log()}
    assert len(signals) == 14  # a started and a finished signal for each of the seven tasks
    runner = pid.return_value  # the child process that ran the tasks, one at a time
    assert {s["pid"] for s in signals.values()} == {runner}
    started = signals[(done.id, "started")]
    assert (started["status"], started["attempts"], started["worker_ids"], started["finished"]) == (
        "RUNNING", 1, [loop.worker_id], False)
    finished = signals[(done.id, "finished")]
    assert (finished["status"], finished["return_value"], finished["finished"], finished["exc_info"]) == (
        "SUCCESSFUL", 42, True, None)
    assert signals[(shaped.id, "finished")]["return_value"] == shaped.return_value  # as it reads back
    failure = signals[(failed.id, "finished")]
    assert (failure["status"], failure["errors"], failure["finished"], failure["exc_info"]) == (
        "FAILED", ["builtins.LookupError"], True, "LookupError")

    # The same calls on Django's ImmediateBackend (run here, at enqueue; after the signals were read,
    # as its receivers log here too) read the same, but for a return value that is not JSON:
    # Django's normalize_json raises TypeError, Sluice's check NotJSON.
    settings.TASKS = {**settings.TASKS, "immediate": {"BACKEND": "django.tasks.backends.immediate.ImmediateBackend",
                                                      "QUEUES": []}}
    here = [task.using(backend="immediate").enqueue(*args) for task, args in (
        (django_tasks.multiply, (6, 7)), (django_tasks.explode, ()), (django_tasks.shapes, ()),
        (django_tasks.sleep_then_echo, ("hi",)))]
    assert [outline(r) for r in here] == [outline(r) for r in (done, failed, shaped, async_result)]
    assert django_tasks.which_run.using(backend="immediate").enqueue("x").return_value["attempt"] == 1


@pytest.mark.django_db(transaction=True)
def test_errors_and_worker_ids_have_one_entry_per_attempt_in_order(settings):
    """A run lost with its worker (killed) counts as a failed attempt with its own worker id."""
    result = django_tasks.explode.enqueue()
    with share.ShareConsumer("tasks.sample", ["tasks.sample"], auto_offset_reset="earliest") as gone:
        assert len(gone.poll(timeout=5)) == 1
    # As a worker killed mid-task leaves it: running, an attempt without an end, a lock that lapses.
    models.TaskResult.objects.filter(id=result.id).update(state="running", attempts=1, started_at=timezone.now())
    models.TaskAttempt.objects.create(task_id=result.id, number=1, worker="gone/1")
    with connection.cursor() as cursor:
        cursor.execute("UPDATE queueing_sharedelivery SET lock_until = now() - interval '1 second'")
    loop = run_until_finished(result)
    assert (result.status, result.attempts, result.worker_ids) == (TaskResultStatus.FAILED, 2, ["gone/1", loop.worker_id])
    assert [e.exception_class_path for e in result.errors] == ["scheduler.exceptions.WorkerLost", "builtins.LookupError"]
    attempts = list(models.TaskAttempt.objects.filter(task_id=result.id).order_by("number"))
    assert result.last_attempted_at == attempts[-1].started_at > attempts[0].started_at


def test_manage_py_check_refuses_a_queue_sluice_cannot_make(manage, tmp_path):
    """The check runs from `manage.py check` itself, not only once something imported django.tasks."""
    (tmp_path / "bad_queues.py").write_text(
        "from config.settings import *  # noqa\n"
        'TASKS = {"default": {"BACKEND": "scheduler.backends.SluiceBackend", "QUEUES": ["sample", "bad queue!"]}}\n')
    checked = manage("check", env={"DJANGO_SETTINGS_MODULE": "bad_queues",
                                   "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"})
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert "sluice.E101" in checked.stderr and "bad queue!" in checked.stderr
