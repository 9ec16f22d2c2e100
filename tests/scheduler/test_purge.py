"""Purging a queue: every task that has not started is cancelled, in batches; the rest is left alone."""
import json
import re

import pytest
from django.db import connection
from django.utils import timezone

from queueing import models as engine_models
from scheduler import control, models
from tests.sampleapp import tasks as sample


def states(results):
    return [r.refresh().state for r in results]


def test_purge_cancels_what_has_not_started_in_batches_and_nothing_else(db):
    queued = [sample.add.enqueue(i, i) for i in range(5)]
    scheduled = sample.add.using(countdown=3600).enqueue(1, 1)
    retrying = sample.add.enqueue(2, 2)
    running, done = sample.add.enqueue(3, 3), sample.add.enqueue(4, 4)
    models.TaskResult.objects.filter(id=retrying.id).update(state="retrying")
    models.TaskResult.objects.filter(id=running.id).update(state="running")
    models.TaskResult.objects.filter(id=done.id).update(state="succeeded", finished_at=timezone.now())
    elsewhere = sample.add.using(queue="other").enqueue(5, 5)
    assert engine_models.DelayedRecord.objects.count() == 1
    assert control.not_started("sample") == 7
    assert control.purge("sample", batch=2) == 7
    assert set(states([*queued, scheduled, retrying])) == {"cancelled"}
    assert states([running, done, elsewhere]) == ["running", "succeeded", "queued"]
    assert all(r.row.finished_at is not None for r in queued)
    assert not engine_models.DelayedRecord.objects.exists()  # the scheduled one's record is gone too
    assert control.purge("sample") == 0


@pytest.mark.django_db(transaction=True)
def test_purge_without_yes_and_no_terminal_refuses_and_changes_nothing(manage):
    waiting = [sample.add.enqueue(i, i) for i in range(3)]
    refused = manage("tasks", "purge", "--queue", "sample", input="y\n")
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        "CommandError: 3 task(s) of queue 'sample' would be cancelled: give --yes (standard input is not a "
        "terminal to ask)"]
    assert set(states(waiting)) == {"queued"}
    purged = manage("tasks", "purge", "--queue", "sample", "--yes")
    assert (purged.returncode, purged.stdout.strip()) == (
        0, "Cancelled 3 task(s) of queue 'sample' that had not started.")
    assert set(states(waiting)) == {"cancelled"}
    nothing = manage("tasks", "purge", "--queue", "sample", "--yes")
    assert nothing.stdout.strip() == "No task of queue 'sample' is waiting to start: nothing purged."
    missing = manage("tasks", "purge")
    assert missing.returncode == 2 and re.search(r"the following arguments are required: --queue", missing.stderr)


@pytest.mark.django_db(transaction=True)
def test_tasks_abort_asks_a_running_task_and_cancels_one_not_started(manage):
    running, waiting = sample.add.enqueue(1, 1), sample.add.enqueue(2, 2)
    models.TaskResult.objects.filter(id=running.id).update(state="running")
    asked = manage("tasks", "abort", str(running.id))
    assert (asked.returncode, asked.stdout.strip()) == (
        0, f"Abort of task {running.id} requested: it stops at its next check.")
    assert running.refresh().row.abort_requested_at is not None
    cancelled = manage("tasks", "abort", str(waiting.id))
    assert cancelled.stdout.strip() == f"Cancelled task {waiting.id} (it had not started)."
    finished = manage("tasks", "abort", str(waiting.id))
    assert finished.returncode == 2 and finished.stderr.strip().endswith(
        f"Task {waiting.id} is in state cancelled: it has finished, there is nothing to abort.")
    shown = manage("tasks", "show", str(running.id))
    assert re.search(r"^abort asked +\S+$", shown.stdout, re.M) and re.search(r"^priority +0$", shown.stdout, re.M)


def test_prune_takes_a_finished_tasks_stale_slot_and_waiter_with_it(db):
    """Guards: rows of the limits' tables referring to a pruned task must not block the prune."""
    import datetime

    gone, waiting = sample.add.enqueue(1, 1), sample.add.enqueue(2, 2)
    old = timezone.now() - datetime.timedelta(days=30)
    models.TaskResult.objects.filter(id__in=[gone.id, waiting.id]).update(state="cancelled", finished_at=old)
    models.ConcurrencySlot.objects.create(task_id=gone.id, key="k", worker="w", lease_until=old)
    models.ConcurrencyWaiter.objects.create(task_id=waiting.id, key="k", group="g", topic="t", partition=0, offset=0)
    assert control.prune(keep_s=60) == 2
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # the foreign keys, checked now, not at a commit
    assert not models.ConcurrencySlot.objects.exists() and not models.ConcurrencyWaiter.objects.exists()


def test_the_purge_reads_the_index_on_queue_and_state(db):
    from scheduler import sql

    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("EXPLAIN (FORMAT JSON) " + sql.queries["purge_results"],
                       {"queue": "sample", "states": ["queued", "scheduled", "retrying"], "limit": 1000})
        plan = json.dumps(cursor.fetchone()[0])
    assert '"Index Name": "task_queue_state"' in plan and '"Seq Scan"' not in plan, plan


@pytest.mark.django_db(transaction=True)
def test_purge_tells_a_waiter_its_task_ended_and_cancels_the_workflows_of_purged_tasks():
    from queueing import storage as queueing_storage
    from queueing import wakeups
    from scheduler import storage
    from scheduler.workflows import chain, group

    waited = sample.add.enqueue(1, 2)
    flow = group(sample.add.s(1, 1), sample.add.s(2, 2)).enqueue()
    following = chain(sample.add.s(3, 3), sample.add.s(4)).enqueue()
    with wakeups.listen_connection([storage.finish_channel(waited.id)]) as listener:
        queueing_storage.ask_for_wakeups(listener, space=wakeups.FINISHES, keys={storage.finish_key(waited.id)})
        # Oldest first, two a batch: the first takes `waited` and one task of the group, whose
        # workflow's cancellation cancels the other (not counted by the purge); the second the chain's.
        assert control.purge("sample", batch=2) == 3
        channels = [n.channel for n in listener.notifies(timeout=30, stop_after=1)]
    assert channels == [storage.finish_channel(waited.id)]
    assert (flow.refresh().state, following.refresh().state) == ("cancelled", "cancelled")
    assert {s.state for s in flow.steps()} == {"cancelled"}
    assert [(s.path, s.state) for s in following.steps()] == [("", "cancelled"), ("1", "cancelled"),
                                                             ("2", "cancelled")]
    assert flow.error[2].startswith("its task ") and flow.error[2].endswith("was cancelled")
    assert {t.refresh().state for t in [waited, *flow.tasks(), *following.tasks()]} == {"cancelled"}
