"""Chains, groups and chords run by a task worker in this process, their tasks in real child
processes (transaction=True: the children read what the test committed)."""
import datetime
import threading
import time

import pytest
from django.db import connection, transaction
from django.utils import timezone

from scheduler import control, exceptions, models, tasks, worker, workflows
from scheduler.workflows import chain, chord, group
from tests.sampleapp import tasks as sample

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def fast(settings):
    settings.SLUICE = {**settings.SLUICE, "POLL_FALLBACK_MS": 50}


@pytest.fixture
def loop():
    """A worker of two processes (started at its first step)."""
    made = worker.TaskWorker("sample", concurrency=2, poll_timeout=0.1)
    yield made
    made.stop()
    made.close()


def run_until(loop, condition, timeout=60):
    """Step the worker until condition() holds; bounded, never a timing assertion."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        loop.run_once()


def run(loop, flow):
    run_until(loop, lambda: flow.refresh().finished)
    return flow


# Signatures ---------------------------------------------------------------------------------


def test_a_signature_is_checked_like_an_enqueue_and_enqueues_nothing():
    with pytest.raises(exceptions.NotJSON):
        sample.add.s(1, {2})
    with pytest.raises(exceptions.InvalidTask):
        sample.add.s(1, 2).set(queue="no spaces")
    with pytest.raises(exceptions.InvalidTask):
        sample.add.s(1, 2).set(countdown="soon")
    signature = sample.add.s(1, b=2).set(queue="other", countdown=5)
    assert (signature.args, signature.kwargs, signature.task.queue, signature.task.countdown) == ([1], {"b": 2},
                                                                                               "other", 5)
    assert sample.add.using(queue="q2").s(1, 2).task.queue == "q2"
    assert not models.TaskResult.objects.exists()
    with pytest.raises(exceptions.InvalidWorkflow):
        chain()
    with pytest.raises(exceptions.InvalidWorkflow):
        group(sample.add.s(1, 2), "not a step")


def test_enqueue_stores_the_workflow_and_starts_only_its_first_task():
    flow = chain(sample.add.s(1, 2), sample.add.s(10), sample.mul.s(2)).enqueue()
    assert (flow.state, flow.row.description) == ("running", "chain(add, add, mul)")
    assert [(s.path, s.kind, s.state) for s in flow.steps()] == [
        ("", "chain", "running"), ("1", "task", "running"), ("2", "task", "pending"), ("3", "task", "pending")]
    [first] = flow.tasks()
    assert (first.row.task_name, first.row.args, first.state) == ("tests.sampleapp.tasks.add", [1, 2], "queued")


def test_enqueue_in_a_rolled_back_transaction_leaves_nothing():
    with pytest.raises(RuntimeError), transaction.atomic():
        chain(sample.add.s(1, 2), sample.add.s(10)).enqueue()
        raise RuntimeError("roll back")
    assert not models.Workflow.objects.exists() and not models.TaskResult.objects.exists()


# Running ------------------------------------------------------------------------------------


def test_a_chain_gives_each_task_the_previous_result_first(loop):
    flow = run(loop, chain(sample.add.s(1, 2), sample.add.s(10), sample.mul.s(2)).enqueue())
    assert (flow.state, flow.return_value) == ("succeeded", 26)
    assert [(t.row.args, t.return_value) for t in flow.tasks()] == [([1, 2], 3), ([3, 10], 13), ([13, 2], 26)]
    assert all(s.state == "succeeded" for s in flow.steps())


def test_an_immutable_signature_does_not_take_the_previous_result(loop):
    flow = run(loop, (sample.add.s(1, 2) | sample.add.si(5, 5)).enqueue())
    assert flow.return_value == 10


def test_a_group_runs_its_members_in_parallel_and_collects_results_in_order(loop):
    flow = run(loop, group(sample.add.s(i, i) for i in range(6)).enqueue())
    assert (flow.state, flow.return_value) == ("succeeded", [0, 2, 4, 6, 8, 10])
    assert flow.row.description == "group(add×6)"


def test_a_big_group_is_enqueued_in_bulk_and_collected_in_order(loop):
    flow = group([sample.mul.s(i, 2) for i in range(70)] + [sample.add.s(1, 1)]).enqueue()
    assert len(flow.tasks()) == 71 and flow.tasks()[69].row.args == [69, 2]
    assert run(loop, flow).return_value == [i * 2 for i in range(70)] + [2]


def test_a_chord_runs_its_callback_once_with_the_results_in_order(loop):
    flow = run(loop, chord(group(sample.mul.s(i, 10) for i in range(5)), sample.total.s()).enqueue())
    assert (flow.state, flow.return_value) == ("succeeded", 100)
    callbacks = models.TaskResult.objects.filter(task_name="tests.sampleapp.tasks.total")
    assert [c.args for c in callbacks] == [[[0, 10, 20, 30, 40]]]


def test_a_chord_with_an_empty_group_calls_back_with_an_empty_list(loop):
    flow = run(loop, chord([], sample.total.s()).enqueue())
    assert flow.return_value == 0


def test_nested_a_group_and_a_chord_inside_chains_and_chains_inside_a_group(loop):
    in_chain = chain(sample.add.s(1, 1), group(sample.mul.s(2), sample.mul.s(3)), sample.total.s()).enqueue()
    chord_in_chain = chain(sample.add.s(1, 2), chord([sample.mul.s(2), sample.mul.s(3)], sample.total.s()),
                           sample.add.s(1)).enqueue()
    chains_in_group = group(chain(sample.add.s(1, 1), sample.mul.s(3)), sample.add.s(5, 5)).enqueue()
    for flow in (in_chain, chord_in_chain, chains_in_group):
        run(loop, flow)
    assert in_chain.return_value == 10  # 2, then [4, 6]
    assert chord_in_chain.return_value == 16  # 3, then [6, 9], 15, + 1
    assert chains_in_group.return_value == [6, 10]
    assert [s.path for s in chord_in_chain.steps()] == ["", "1", "2", "2.1", "2.1.1", "2.1.2", "2.2", "3"]


def test_a_task_retried_within_its_attempts_does_not_stop_the_chain(loop):
    flow = run(loop, chain(sample.flaky.si(2), sample.add.s(100)).enqueue())
    assert (flow.state, flow.return_value) == ("succeeded", 102)
    assert flow.tasks()[0].row.failures == 1


# Failure and cancellation -------------------------------------------------------------------


def test_a_task_that_fails_for_good_stops_the_chain_and_names_itself(loop):
    flow = run(loop, chain(sample.add.s(1, 1), sample.broken.si("bad input"), sample.add.s(1)).enqueue())
    assert flow.state == "failed"
    failing = flow.tasks()[1]
    assert flow.error == (failing.id, "builtins.ValueError", "bad input")
    assert [(s.path, s.state) for s in flow.steps()] == [("", "failed"), ("1", "succeeded"), ("2", "failed"),
                                                         ("3", "cancelled")]
    assert len(flow.tasks()) == 2  # the third never started
    with pytest.raises(ValueError):
        flow.return_value


def test_a_step_whose_task_no_process_knows_fails_the_workflow(loop):
    unknown = tasks.Task(name="tests.sampleapp.tasks.nowhere", func=None, queue="sample")
    flow = run(loop, chain(sample.add.s(1, 1), unknown.s()).enqueue())
    assert flow.state == "failed" and flow.error[1] == "scheduler.exceptions.TaskNotRegistered"
    assert flow.tasks()[1].row.args == [2]


def test_a_failed_task_retried_by_hand_runs_alone_and_its_workflow_stays_failed(loop):
    flow = run(loop, chain(sample.broken.si("no"), sample.add.s(1)).enqueue())
    [failed] = flow.tasks()
    again = control.retry(failed.id)
    run_until(loop, lambda: again.refresh().finished)
    assert (again.state, flow.refresh().state, len(flow.tasks())) == ("failed", "failed", 1)
    assert [s.state for s in flow.steps()] == ["failed", "failed", "cancelled"]


def test_a_failed_member_fails_the_chord_and_its_callback_never_runs(loop):
    members = [sample.add.s(1, 1), sample.broken.si("no"), sample.add.s(2, 2)]
    flow = run(loop, chord(members, sample.total.s()).enqueue())
    assert flow.state == "failed" and flow.error[1:] == ("builtins.ValueError", "no")
    assert not models.TaskResult.objects.filter(task_name="tests.sampleapp.tasks.total").exists()
    steps = {s.path: s.state for s in flow.steps()}
    assert (steps[""], steps["1"], steps["1.2"], steps["2"]) == ("failed", "failed", "failed", "cancelled")


def test_cancelling_a_workflow_cancels_its_tasks_not_started_and_no_step_follows(loop):
    flow = chain(group(sample.add.s(1, 1), sample.add.s(2, 2).set(countdown=3600)), sample.total.s()).enqueue()
    first, scheduled = flow.tasks()
    assert scheduled.state == "scheduled"
    workflows.cancel(flow.id)
    assert (flow.refresh().state, first.refresh().state, scheduled.refresh().state) == (
        "cancelled", "cancelled", "cancelled")
    assert {s.state for s in flow.steps()} == {"cancelled"}
    late = sample.add.enqueue(3, 3)
    run_until(loop, lambda: late.refresh().finished)
    assert first.refresh().attempts() == [] and len(flow.tasks()) == 2
    with pytest.raises(exceptions.WorkflowNotCancellable):
        workflows.cancel(flow.id)
    with pytest.raises(exceptions.WorkflowNotFound):
        workflows.cancel("d1b0c0de-0000-0000-0000-000000000000")


def test_a_task_running_when_its_workflow_is_cancelled_keeps_its_result_and_nothing_follows(loop, tmp_path):
    gate = tmp_path / "gate"
    flow = chain(sample.counts_to.si(1, str(gate)), sample.add.s(1)).enqueue()
    [running] = flow.tasks()
    loop = loop
    run_until(loop, lambda: running.refresh().state == "running")
    workflows.cancel(flow.id)
    gate.touch()
    run_until(loop, lambda: running.refresh().finished)
    assert (running.state, flow.refresh().state, len(flow.tasks())) == ("succeeded", "cancelled", 1)
    assert [(s.path, s.state, s.result) for s in flow.steps()] == [("", "cancelled", None), ("1", "succeeded", 1),
                                                                    ("2", "cancelled", None)]


def test_cancelling_one_task_of_a_workflow_cancels_the_workflow():
    flow = group(sample.add.s(1, 1), sample.add.s(2, 2)).enqueue()
    one, other = flow.tasks()
    control.cancel(one.id)
    assert (flow.refresh().state, other.refresh().state) == ("cancelled", "cancelled")
    assert flow.error == (one.id, "", f"its task {one.id} (step 1) was cancelled")


def test_a_next_task_that_cannot_start_fails_the_workflow_instead_of_the_worker(loop):
    sample.add.using(unique_key="only-one", queue="elsewhere").enqueue(0, 0)  # no worker takes it
    flow = run(loop, chain(sample.add.s(1, 1), sample.add.s(1).set(unique_key="only-one"), sample.add.s(1)).enqueue())
    assert flow.state == "failed" and flow.error[1] == "scheduler.exceptions.AlreadyEnqueued"
    assert [(s.path, s.state) for s in flow.steps()] == [("", "failed"), ("1", "succeeded"), ("2", "cancelled"),
                                                         ("3", "cancelled")]
    after = run(loop, chain(sample.add.s(2, 2), sample.add.s(1)).enqueue())  # the worker goes on
    assert after.return_value == 5


# Exactly once -------------------------------------------------------------------------------


def settle(step, value, *, fail=False):
    """Record a task's outcome and advance its workflow in one transaction, as the worker does."""
    state = models.State.FAILED if fail else models.State.SUCCEEDED
    models.TaskResult.objects.filter(id=step.task_id).update(state=state, return_value=value,
                                                             finished_at=timezone.now(),
                                                             error_class="x.Error" if fail else "",
                                                             error_message="failed" if fail else "")
    workflows.task_settled({"id": str(step.task_id), "workflow": str(step.workflow_id), "step": step.id})


def test_an_outcome_rolled_back_with_its_transaction_starts_nothing_and_its_rerun_does_once():
    """Guards: a worker that dies before its outcome commits must not leave the next step started."""
    flow = chain(sample.add.s(1, 1), sample.add.s(1)).enqueue()
    first = flow.steps()[1]
    with pytest.raises(RuntimeError), transaction.atomic():
        settle(first, 2)
        raise RuntimeError("the worker died before its commit")
    assert len(flow.tasks()) == 1
    with transaction.atomic():
        settle(first, 2)
    with transaction.atomic():
        settle(first, 2)  # the same outcome again is taken once
    assert [t.row.args for t in flow.tasks()] == [[1, 1], [2, 1]]


def test_the_last_two_members_finishing_at_once_start_the_callback_once():
    """Guards: two outcome transactions that each see the other's member unfinished must not both
    (or neither) start the chord's callback: they take the workflow's row one after the other."""
    flow = chord([sample.add.s(1, 1), sample.add.s(2, 2)], sample.total.s()).enqueue()
    one, two = [s for s in flow.steps() if s.kind == "task" and s.task_id]
    second_done = threading.Event()

    def finish_second():
        try:
            with transaction.atomic():
                settle(two, 4)  # waits for the first transaction's lock on the workflow
        finally:
            connection.close()
            second_done.set()

    with transaction.atomic():
        settle(one, 2)
        other = threading.Thread(target=finish_second)
        other.start()
        assert not second_done.wait(0.5)  # blocked behind this transaction
    other.join(30)
    callbacks = models.TaskResult.objects.filter(task_name="tests.sampleapp.tasks.total")
    assert [c.args for c in callbacks] == [[[2, 4]]]


def test_prune_deletes_workflows_finished_longer_ago_than_kept_with_their_steps(settings):
    settings.SLUICE = {**settings.SLUICE, "TASK_RESULT_TTL_S": 3600}
    old, recent, running = (chain(sample.add.s(1, 1), sample.add.s(1)).enqueue() for _ in range(3))
    for flow in (old, recent):
        workflows.cancel(flow.id)
    models.Workflow.objects.filter(id=old.id).update(finished_at=timezone.now() - datetime.timedelta(hours=2))
    control.prune()
    assert set(models.Workflow.objects.values_list("id", flat=True)) == {recent.id, running.id}
    assert not models.WorkflowStep.objects.filter(workflow_id=old.id).exists()
    assert len(recent.steps()) == 3
