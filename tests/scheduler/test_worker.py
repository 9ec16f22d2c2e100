"""The task worker in this process, its tasks in real child processes (transaction=True: the
children read what the test committed)."""
import time

import pytest
from django.db import connection

from queueing import models as engine_models, share, topics
from scheduler import control, models, tasks, worker
from tests.sampleapp import tasks as sample

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def fast(settings):
    settings.SLUICE = {**settings.SLUICE, "POLL_FALLBACK_MS": 50}


@pytest.fixture
def make_worker():
    made = []

    def build(concurrency=1, **options):
        loop = worker.TaskWorker("sample", concurrency=concurrency, poll_timeout=0.1, **options)
        made.append(loop)
        return loop

    yield build
    for loop in made:
        loop.stop()
        loop.close()


def run_until(loop, condition, timeout=60):
    """Step the worker until condition() holds; bounded, never a timing assertion."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        loop.run_once()


def finished(*results):
    return lambda: all(r.refresh().finished for r in results)


def test_a_task_runs_and_its_result_is_recorded_with_its_acknowledgement(make_worker):
    result = sample.add.enqueue(2, 3)
    loop = make_worker()
    run_until(loop, finished(result))
    assert (result.state, result.return_value, result.row.attempts) == ("succeeded", 5, 1)
    assert result.row.started_at <= result.row.finished_at
    [attempt] = result.attempts()
    assert (attempt.number, attempt.outcome, attempt.worker) == (1, "succeeded", loop.worker_id)
    assert attempt.ended_at is not None
    assert not engine_models.ShareDelivery.objects.exists()  # the record was accepted


def test_a_free_process_never_waits_on_the_busy_ones_and_takes_a_task_beside_a_long_one(make_worker):
    # The worker waits on its processes alone only while none of them is free; otherwise its poll
    # waits for the log and for them at once. (It once waited 0.2 s on idle processes after
    # recording their outcomes, with tasks committed meanwhile: a start 200 ms late.)
    loop = make_worker(concurrency=2)
    waits = []
    collect = loop._collect

    def noting(timeout, **options):
        if timeout:
            waits.append([slot.free for slot in loop.slots])
        return collect(timeout, **options)

    loop._collect = noting
    quick = [sample.add.enqueue(n, n) for n in range(4)]
    run_until(loop, finished(*quick))
    slow = sample.slow_add.enqueue(1, 1, seconds=3)
    run_until(loop, lambda: slow.refresh().state == "running")
    beside = sample.add.enqueue(5, 5)
    run_until(loop, finished(beside))
    assert not slow.refresh().finished  # the free process took it while the other ran the slow one
    run_until(loop, finished(slow))
    assert waits and not any(any(free) for free in waits)


def test_a_failing_task_is_retried_after_its_back_off_until_it_succeeds(make_worker):
    result = sample.flaky.enqueue(3)
    run_until(make_worker(), finished(result))
    assert (result.state, result.return_value, result.row.attempts, result.row.failures) == ("succeeded", 3, 3, 2)
    attempts = result.attempts()
    assert [(a.number, a.outcome) for a in attempts] == [(1, "failed"), (2, "failed"), (3, "succeeded")]
    assert attempts[0].error_class == "builtins.ConnectionError"
    assert attempts[0].error_message == "attempt 1 fails"
    assert "raise ConnectionError" in attempts[0].traceback


def test_a_task_out_of_attempts_fails_with_its_error_and_a_dead_letter(make_worker):
    result = sample.flaky.enqueue(5)
    run_until(make_worker(), finished(result))
    assert (result.state, result.row.attempts) == ("failed", 3)
    assert result.error[:2] == ("builtins.ConnectionError", "attempt 3 fails")
    [letter] = engine_models.Record.objects.filter(topic_id=topics.get_topic("tasks.sample.DLQ").id)
    assert str(result.id) in bytes(letter.value).decode()
    with pytest.raises(ValueError):
        result.return_value


def test_an_error_outside_retry_on_fails_at_once(make_worker):
    result = sample.broken.enqueue("bad input")
    run_until(make_worker(), finished(result))
    assert (result.state, result.row.attempts) == ("failed", 1)
    assert result.error[:2] == ("builtins.ValueError", "bad input")


def test_a_task_may_ask_for_another_run_with_retry(make_worker):
    result = sample.asks_again.enqueue()
    run_until(make_worker(), finished(result))
    assert (result.state, result.return_value) == ("succeeded", "second run")
    assert [(a.outcome, a.error_class, a.error_message) for a in result.attempts()] == [
        ("failed", "scheduler.exceptions.Retry", "not yet"), ("succeeded", "", "")]


def test_a_return_value_that_is_not_json_fails_the_task(make_worker):
    result = sample.not_json.enqueue()
    run_until(make_worker(), finished(result))
    assert result.state == "failed" and result.error[0] == "scheduler.exceptions.NotJSON"


def test_progress_is_readable_while_the_task_runs(make_worker, tmp_path):
    gate = tmp_path / "gate"
    result = sample.counts_to.enqueue(3, str(gate))
    loop = make_worker()
    run_until(loop, lambda: result.refresh().progress is not None)
    assert (result.state, result.progress) == ("running", (0, 3, "starting"))
    gate.touch()
    run_until(loop, finished(result))
    assert result.progress == (3, 3, "step 3") and result.return_value == 3


def test_the_soft_time_limit_raises_inside_the_task(make_worker):
    result = sample.overruns_softly.enqueue()
    run_until(make_worker(), finished(result))
    assert (result.state, result.return_value) == ("succeeded", "cleaned up")


def test_the_hard_time_limit_kills_a_task_that_ignores_the_soft_one(make_worker):
    """Guards: a runaway task must not hold its worker; the process is replaced and work goes on."""
    runaway = sample.runaway.enqueue()
    loop = make_worker()
    run_until(loop, finished(runaway))
    assert runaway.state == "failed"
    assert runaway.error[:2] == ("scheduler.exceptions.HardTimeLimitExceeded",
                                 "killed after its hard time limit of 1.5 s")
    after = sample.add.enqueue(1, 1)
    run_until(loop, finished(after))
    assert after.return_value == 2


def test_a_hard_time_limit_kill_midway_through_a_batch_keeps_the_outcomes_before_it(make_worker):
    """A child sends quick jobs' outcomes together, but all of them before a job with a hard time
    limit starts: the kill at that limit takes none of them (each would get the limit's error, and
    its task would fail though it succeeded)."""
    adds = [sample.add.enqueue(n, 1) for n in range(6)]
    runaway = sample.runaway.enqueue()
    adds += [sample.add.enqueue(n, 1) for n in range(6, 12)]
    loop = make_worker()
    loop._run_s = 1e-5  # quick tasks seen already: one batch takes all thirteen
    run_until(loop, finished(runaway, *adds))
    assert runaway.error[:1] == ("scheduler.exceptions.HardTimeLimitExceeded",)
    assert [(a.state, a.return_value) for a in adds] == [("succeeded", n + 1) for n in range(12)]
    # Those behind the runaway in the batch were handed back when it was killed, and ran again.
    assert {tuple(a.outcome for a in r.attempts()) for r in adds} <= {("succeeded",), ("interrupted", "succeeded")}


def test_concurrency_runs_that_many_tasks_at_once(make_worker, tmp_path):
    """Each rendezvous task waits until the other ran: they only finish if they ran together."""
    results = [sample.rendezvous.enqueue(str(tmp_path), name, 2) for name in ("a", "b")]
    run_until(make_worker(concurrency=2), finished(*results))
    assert [r.return_value for r in results] == [["a", "b"], ["a", "b"]]
    assert len({r.row.worker for r in results}) == 1


def test_a_cancelled_task_never_starts(make_worker):
    cancelled = sample.add.enqueue(1, 2)
    control.cancel(cancelled.id)
    after = sample.add.enqueue(3, 4)
    run_until(make_worker(), finished(after))
    assert cancelled.refresh().state == "cancelled"
    assert cancelled.attempts() == [] and cancelled.row.started_at is None
    assert not engine_models.ShareDelivery.objects.exists()  # its record was settled without running


def test_a_task_retried_by_hand_before_its_old_record_was_skipped_runs_once(make_worker):
    """Guards: after cancel and retry, the log holds two records of one task; only the new one runs it."""
    result = sample.add.enqueue(1, 2)
    control.cancel(result.id)
    control.retry(result.id)
    loop = make_worker(concurrency=2)
    run_until(loop, finished(result))
    run_until(loop, lambda: not engine_models.ShareDelivery.objects.exists()
              and engine_models.SharePartition.objects.filter(acquire_offset=2).exists())
    assert (result.refresh().return_value, result.row.attempts, result.row.generation) == (3, 1, 2)
    assert len(result.attempts()) == 1


def test_a_stopped_worker_hands_back_what_did_not_finish_within_the_grace_period(make_worker, tmp_path):
    result = sample.counts_to.enqueue(1, str(tmp_path / "never"))
    loop = make_worker(grace=0.2)
    run_until(loop, lambda: result.refresh().state == "running")
    loop.stop()
    loop.close()
    assert result.refresh().state == "queued"
    [attempt] = result.attempts()
    assert attempt.outcome == "interrupted"
    [delivery] = engine_models.ShareDelivery.objects.all()
    assert delivery.state == engine_models.ShareDelivery.State.AVAILABLE  # at once, for another worker


def test_a_worker_that_lost_its_lock_does_not_record_the_outcome(make_worker, tmp_path):
    """Guards the exactly-once result: the outcome rides on the acknowledgement, which is fenced."""
    gate = tmp_path / "gate"
    result = sample.counts_to.enqueue(1, str(gate))
    loop = make_worker()
    run_until(loop, lambda: result.refresh().state == "running")
    with connection.cursor() as cursor:
        cursor.execute("UPDATE queueing_sharedelivery SET lock_until = now() - interval '1 second'")
    other = share.ShareConsumer("tasks.sample", ["tasks.sample"], auto_offset_reset="earliest")
    try:
        [again] = other.poll(timeout=5)
        assert again.delivery_count == 2
        gate.touch()
        loop._renewed = 0  # renew now: the lock is found lost and the task stopped here
        run_until(loop, lambda: all(s.running is None for s in loop.slots))
        assert result.refresh().state == "running" and result.row.return_value is None
    finally:
        other.close()


def test_a_task_whose_worker_died_is_run_again_and_its_attempt_marked_lost(make_worker, tmp_path):
    result = sample.add.enqueue(5, 5)
    with share.ShareConsumer("tasks.sample", ["tasks.sample"], auto_offset_reset="earliest") as gone:
        assert len(gone.poll(timeout=5)) == 1
    # As a worker killed mid-task leaves it: running, an attempt without an end, a lock that lapses.
    models.TaskResult.objects.filter(id=result.id).update(state="running", attempts=1)
    models.TaskAttempt.objects.create(task_id=result.id, number=1, worker="gone/1")
    with connection.cursor() as cursor:
        cursor.execute("UPDATE queueing_sharedelivery SET lock_until = now() - interval '1 second'")
    run_until(make_worker(), finished(result))
    assert (result.state, result.return_value, result.row.attempts, result.row.lost) == ("succeeded", 10, 2, 1)
    assert [(a.number, a.outcome) for a in result.attempts()] == [(1, "lost"), (2, "succeeded")]


def test_a_task_lost_with_its_worker_too_often_fails(make_worker, settings):
    settings.SLUICE = {**settings.SLUICE, "TASK_MAX_LOST": 1}
    result = sample.add.enqueue(5, 5)
    models.TaskResult.objects.filter(id=result.id).update(state="running", attempts=2, lost=1)
    models.TaskAttempt.objects.create(task_id=result.id, number=2, worker="gone/2")
    run_until(make_worker(), finished(result))
    assert (result.state, result.row.lost, result.error[0]) == ("failed", 2, "scheduler.exceptions.WorkerLost")


def test_a_task_sent_to_another_queue_is_run_by_that_queues_worker(make_worker):
    result = sample.add.using(queue="urgent").enqueue(4, 4)
    loop = worker.TaskWorker("urgent", poll_timeout=0.1)
    try:
        run_until(loop, finished(result))
    finally:
        loop.stop()
        loop.close()
    assert (result.row.queue, result.return_value) == ("urgent", 8)


def test_the_worker_keeps_the_engines_delivery_limit_out_of_the_way(make_worker):
    """Guards: a group configured by hand (delivery limit 5 by default) must not dead-letter the
    record of a task that is still retrying."""
    share.configure_group("tasks.sample", lock_duration_ms=5000)
    loop = make_worker()
    loop.run_once()
    group = share.models.ShareGroup.objects.get(name="tasks.sample")
    assert (group.delivery_limit, group.lock_duration_ms) == (tasks.MAX_ATTEMPTS_LIMIT, 5000)


def test_an_outcome_that_met_a_lost_connection_is_recorded_after_the_reconnection(make_worker, tmp_path):
    """Guards: a database blip between a task's end and its outcome must not make it run again."""
    from django.db import connection as db

    from queueing import loops
    from tests.conftest import cut_connection

    gate = tmp_path / "gate"
    result = sample.counts_to.enqueue(1, str(gate))
    loop = make_worker()
    run_until(loop, lambda: result.refresh().state == "running")
    cut_connection()
    gate.touch()
    errors = 0
    deadline = time.monotonic() + 60
    while errors == 0 or not result.refresh().finished:  # what Loop.run does on a lost connection
        assert time.monotonic() < deadline, "condition not reached"
        try:
            loop.run_once()
        except loops.CONNECTION_ERRORS:
            errors += 1
            db.close()
    assert (result.state, result.return_value, result.row.attempts, result.row.lost) == ("succeeded", 1, 1, 0)
