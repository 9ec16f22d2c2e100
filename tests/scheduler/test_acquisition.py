"""What decides which task a worker starts, and when: priorities, per-key concurrency limits, rate
limits; and a running task's cooperative abort. The worker in this process, its tasks in real child
processes (transaction=True: the children read what the test committed)."""
import datetime

import pytest

from queueing import models as engine_models, topics
from scheduler import control, exceptions, limits, models, tasks
from tests.sampleapp import tasks as sample
from tests.scheduler.test_worker import fast, finished, make_worker, run_until  # noqa: F401 - fixtures

pytestmark = pytest.mark.django_db(transaction=True)


def test_with_the_worker_busy_tasks_start_in_priority_order(make_worker, tmp_path):
    gate = tmp_path / "gate"
    busy = sample.gated.enqueue(str(gate))
    loop = make_worker()
    run_until(loop, lambda: busy.refresh().state == "running")
    priorities = [0, 5, -3, 100, -100, 7]
    waiting = [sample.add.using(priority=p).enqueue(p, 0) for p in priorities]
    gate.touch()
    run_until(loop, finished(busy, *waiting))
    started = sorted(waiting, key=lambda r: r.attempts()[0].started_at)
    assert [r.return_value for r in started] == sorted(priorities, reverse=True)
    assert [r.row.priority for r in started] == sorted(priorities, reverse=True)
    assert topics.get_topic("tasks-p-100.sample") and topics.get_topic("tasks-p100.sample")


def test_a_band_created_after_the_worker_started_is_followed(make_worker):
    loop = make_worker()
    loop.run_once()
    assert loop.consumer.topics == ["tasks.sample"]
    urgent = sample.add.using(priority=42).enqueue(1, 1)
    run_until(loop, finished(urgent))
    assert loop.consumer.topics == ["tasks-p42.sample", "tasks.sample"]
    assert urgent.return_value == 2


def test_band_names_cannot_be_another_queues_topic():
    assert tasks.topic_for("a", 0) == "tasks.a" and tasks.topic_for("a", -5) == "tasks-p-5.a"
    assert tasks.band_of("tasks-p-5.a.b") == ("a.b", -5)
    assert tasks.band_of("tasks.p5.a") is None and tasks.band_of("tasks-pX.a") is None


@pytest.mark.parametrize("priority", [101, -101, 1.5, True, "1"])
def test_a_priority_outside_djangos_range_is_refused(priority):
    with pytest.raises(exceptions.InvalidTask, match="priority must be an integer from -100 to 100"):
        sample.add.using(priority=priority)


def test_at_most_the_limit_run_per_key_and_a_freed_slot_starts_the_next_at_once(make_worker, tmp_path, monkeypatch):
    """With the slot re-check an hour away, the waiting tasks can only start because a freed slot
    makes the longest waiter's record available at once."""
    monkeypatch.setattr(limits, "SLOT_RECHECK_S", 3600)
    gate = tmp_path / "gate"
    same = [sample.one_at_a_time.enqueue("k", str(gate)) for _ in range(3)]
    other = sample.one_at_a_time.enqueue("other", str(gate))
    loop = make_worker(concurrency=3)
    run_until(loop, lambda: models.ConcurrencyWaiter.objects.count() == 2 and other.refresh().state == "running")
    assert [r.refresh().state for r in same].count("running") == 1
    assert sorted(models.ConcurrencySlot.objects.values_list("key", flat=True)) == ["k", "other"]
    gate.touch()
    run_until(loop, finished(*same, other))
    assert {r.state for r in same} == {"succeeded"}
    # Waiting did not burn attempts, nor deliveries: each ran on its first attempt and delivery.
    assert [r.row.attempts for r in same] == [1, 1, 1]
    assert not engine_models.DeliveryAttempt.objects.exists()
    assert not models.ConcurrencySlot.objects.exists() and not models.ConcurrencyWaiter.objects.exists()
    runs = sorted((r.attempts()[0].started_at, r.attempts()[0].ended_at) for r in same)
    assert all(ended <= next_start for (_, ended), (next_start, _) in zip(runs, runs[1:]))


def test_a_per_call_concurrency_limit_overrides_the_tasks(make_worker, tmp_path):
    gate = tmp_path / "gate"
    two = [sample.one_at_a_time.using(concurrency_limit=2).enqueue("k", str(gate)) for _ in range(2)]
    loop = make_worker(concurrency=2)
    run_until(loop, lambda: all(r.refresh().state == "running" for r in two))
    gate.touch()
    run_until(loop, finished(*two))
    assert {r.row.concurrency_limit for r in two} == {2}


def test_a_lapsed_slot_is_free_and_a_slot_of_a_vanished_run_holds_until_its_lease_lapses(make_worker):
    """Guards crash safety: a SIGKILLed worker's slot frees itself when its lease lapses, and not before."""
    from scheduler import storage

    first, second = sample.one_at_a_time.enqueue("k", "x"), sample.one_at_a_time.enqueue("k", "y")
    assert storage.take_slot(key="k", limit=1, task_id=first.id, worker="gone", lease_ms=60_000)
    assert not storage.take_slot(key="k", limit=1, task_id=second.id, worker="me", lease_ms=60_000)
    assert not storage.take_slot(key="k", limit=1, task_id=first.id, worker="me", lease_ms=60_000)
    models.ConcurrencySlot.objects.update(lease_until=datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC))
    assert storage.take_slot(key="k", limit=1, task_id=second.id, worker="me", lease_ms=60_000)
    assert list(models.ConcurrencySlot.objects.values_list("task_id", "worker")) == [(second.id, "me")]


@pytest.mark.parametrize("text", ["10", "0/s", "-1/s", "10/d", "ten/s", "1.5/s", 10, ""])
def test_a_malformed_rate_is_refused_with_a_clear_error(text):
    with pytest.raises(exceptions.InvalidTask, match="is not N/s, N/m or N/h with N a positive integer"):
        tasks.task(lambda: None, name="bad.rate", rate_limit=text)


def test_a_rate_limit_holds_in_every_window_and_burns_no_attempts(make_worker):
    results = sample.rated.enqueue_many(((n,), {}) for n in range(7))
    run_until(make_worker(concurrency=3), finished(*results))
    assert {r.state for r in results} == {"succeeded"} and {r.row.attempts for r in results} == {1}
    starts = sorted(r.attempts()[0].started_at for r in results)
    second = datetime.timedelta(seconds=1)
    assert max(sum(1 for s in starts if t <= s < t + second) for t in starts) == 2
    [window] = models.RateWindow.objects.filter(task_name=sample.rated.name)
    assert 1 <= len(window.starts) <= 2 and window.starts[-1] == starts[-1]  # at most the limit is kept


def test_a_running_task_sees_an_abort_at_its_next_check_and_ends_cancelled(make_worker, tmp_path):
    result = sample.gated.enqueue(str(tmp_path / "never"))
    loop = make_worker()
    run_until(loop, lambda: result.refresh().state == "running")
    assert result.abort().row.abort_requested_at is not None and result.state == "running"
    run_until(loop, finished(result))
    assert (result.state, result.error[0]) == ("cancelled", "scheduler.exceptions.TaskAborted")
    [attempt] = result.attempts()
    assert (attempt.outcome, attempt.error_class) == ("aborted", "scheduler.exceptions.TaskAborted")
    assert not engine_models.ShareDelivery.objects.exists()
    with pytest.raises(exceptions.NotAbortable):
        control.abort(result.id)


def test_progress_checks_for_an_abort_too(make_worker, tmp_path):
    gate = tmp_path / "gate"
    result = sample.counts_to.enqueue(3, str(gate))
    loop = make_worker()
    run_until(loop, lambda: result.refresh().progress is not None)
    result.abort()
    gate.touch()
    run_until(loop, finished(result))
    assert (result.state, result.progress) == ("cancelled", (1, 3, "step 1"))
    assert [a.outcome for a in result.attempts()] == ["aborted"]


def test_aborting_a_task_not_started_cancels_it():
    result = sample.add.enqueue(1, 2)
    assert result.abort().state == "cancelled" and result.row.abort_requested_at is None


def test_a_task_retried_by_hand_after_an_abort_forgets_it():
    """Guards: the old abort request must not stop the new run at its first check."""
    result = sample.add.enqueue(1, 2)
    models.TaskResult.objects.filter(id=result.id).update(state="running")
    control.abort(result.id)
    models.TaskResult.objects.filter(id=result.id).update(state="cancelled")
    assert control.retry(result.id).row.abort_requested_at is None


def test_a_run_whose_slot_lapsed_is_stopped_and_handed_back(make_worker, tmp_path):
    """Guards the limit when a worker kept its lock but lost its slot (another task may hold it now)."""
    result = sample.one_at_a_time.enqueue("k", str(tmp_path / "never"))
    loop = make_worker()
    run_until(loop, lambda: result.refresh().state == "running")
    models.ConcurrencySlot.objects.all().delete()  # as release_lapsed_slots does once the lease lapsed
    loop._renewed = 0
    run_until(loop, lambda: result.refresh().state == "queued")
    assert [a.outcome for a in result.attempts()] == ["interrupted"]
    assert all(s.running is None for s in loop.slots)
