import datetime
import threading
import time
import uuid

import pytest
from django.db import connection
from django.utils import timezone

from queueing import storage as queueing_storage, wakeups
from scheduler import control, exceptions, models, results, storage, worker
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


# Result.wait() wakes on the NOTIFY of the transaction that records the finish --------------------


class Waiting(threading.Thread):
    """A Result.wait() in a thread of its own (its own database connection)."""

    def __init__(self, task_id, timeout=120):
        super().__init__(daemon=True)
        self.task_id, self.timeout = task_id, timeout
        self.result = self.error = None

    def run(self):
        try:
            self.result = results.get(self.task_id).wait(timeout=self.timeout)
        except BaseException as error:  # noqa: BLE001 - reported to the test
            self.error = error
        finally:
            connection.close()


def asked_for_wakeups(task_id):
    """Whether a waiter holds the task's wake-up key (writers of its finish then NOTIFY it)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid::bigint = %s"
                       " AND objid::bigint = %s AND objsubid = 2 AND mode = 'ShareLock' AND granted",
                       [wakeups.FINISHES, storage.finish_key(task_id)])
        return cursor.fetchone()[0] > 0


def wait_until(condition, timeout=60):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def start_waiting(result):
    waiting = Waiting(result.id)
    waiting.start()
    wait_until(lambda: asked_for_wakeups(result.id))
    return waiting


@pytest.mark.django_db(transaction=True)
def test_wait_returns_at_a_cancellation_with_the_fallback_poll_out_of_reach(settings):
    """The fallback poll (10 minutes) is longer than the wait's timeout (2 minutes): only the NOTIFY
    can end it before the timeout."""
    settings.SLUICE = {**settings.SLUICE, "POLL_FALLBACK_MS": 600_000}
    result = sample.add.enqueue(1, 2)
    waiting = start_waiting(result)
    control.cancel(result.id)
    waiting.join(150)
    assert (waiting.is_alive(), waiting.error) == (False, None)
    assert waiting.result.state == "cancelled"


@pytest.mark.django_db(transaction=True)
def test_wait_returns_when_a_worker_records_a_success_or_a_failure(settings):
    settings.SLUICE = {**settings.SLUICE, "POLL_FALLBACK_MS": 600_000}
    done, failed = sample.add.enqueue(1, 2), sample.broken.enqueue("no")
    waits = [start_waiting(done), start_waiting(failed)]
    loop = worker.TaskWorker("sample", poll_timeout=0.1)
    deadline = time.monotonic() + 150
    try:
        while any(w.is_alive() for w in waits):
            assert time.monotonic() < deadline, "a wait did not return"
            loop.run_once()
    finally:
        loop.stop()
        loop.close()
    assert [w.error for w in waits] == [None, None]
    assert (waits[0].result.return_value, waits[1].result.state) == (3, "failed")


@pytest.mark.django_db(transaction=True)
def test_a_finish_without_its_notify_only_delays_the_wait_to_the_fallback_poll(settings):
    settings.SLUICE = {**settings.SLUICE, "POLL_FALLBACK_MS": 50}
    result = sample.add.enqueue(1, 2)
    waiting = start_waiting(result)
    # Written as a finish whose NOTIFY was lost would leave it: no announce_finished.
    models.TaskResult.objects.filter(id=result.id).update(state="succeeded", return_value=3, finished_at=timezone.now())
    waiting.join(60)
    assert (waiting.is_alive(), waiting.error, waiting.result.return_value) == (False, None, 3)


@pytest.mark.django_db(transaction=True)
def test_a_finish_notifies_only_while_someone_waits(settings):
    """Nobody waiting: the finishing transaction takes the key itself and sends no NOTIFY (a NOTIFY
    serialises commits database-wide); a listener that asked hears it."""
    quiet, heard = sample.add.enqueue(1, 2), sample.add.enqueue(3, 4)
    with wakeups.listen_connection([storage.finish_channel(quiet.id), storage.finish_channel(heard.id)]) as listener:
        queueing_storage.ask_for_wakeups(listener, space=wakeups.FINISHES, keys={storage.finish_key(heard.id)})
        control.cancel(quiet.id)
        control.cancel(heard.id)
        channels = [n.channel for n in listener.notifies(timeout=30, stop_after=1)]
        # The NOTIFYs of both commits are in by now (in commit order): take any other already here.
        channels += [n.channel for n in listener.notifies(timeout=0)]
    assert channels == [storage.finish_channel(heard.id)]


def test_a_state_filter_counts_a_task_as_it_reads(db):
    """A scheduled task whose time has come reads as queued (Result.state): the lists filtering by
    state (tasks list --state, the API, the console) count it there too, not as scheduled."""
    from scheduler import selectors

    due = sample.add.using(countdown=3600).enqueue(1, 1)
    later = sample.add.using(countdown=3600).enqueue(2, 2)
    queued = sample.add.enqueue(3, 3)
    # due's time has come; its record still waits for the delayed-record mover.
    models.TaskResult.objects.filter(id=due.id).update(eta=timezone.now() - datetime.timedelta(seconds=1))
    assert (due.refresh().state, later.refresh().state) == ("queued", "scheduled")
    for state, expected in [("queued", {due.id, queued.id}), ("scheduled", {later.id})]:
        _, rows = selectors.task_list(state=state)
        assert {r.id for r in rows} == expected, state
        assert {r.id for r in selectors.tasks(state=state)} == expected, state
