"""Workflows run by real `manage.py worker --queue` processes, one of them killed with SIGKILL midway:
every chain and chord completes with the right result, each chord's callback runs once, and a
failing step stops its workflow there."""
import signal

import pytest
from django.db import connection

from queueing import share
from scheduler import models
from scheduler.workflows import chain, chord
from tests.acceptance.test_task_workers import configure, effects, start, tally, wait_for  # noqa: F401
from tests.sampleapp import tasks as sample

pytestmark = [pytest.mark.acceptance, pytest.mark.django_db(transaction=True)]


def callbacks(tag):
    """The chord callbacks enqueued with that tag (their last argument)."""
    return [r for r in models.TaskResult.objects.filter(task_name="tests.sampleapp.tasks.total_once")
            if r.args[-1] == tag]


def test_workflows_complete_once_through_a_worker_killed_midway(start, effects):
    configure(lock_ms=1500)
    chains = {i: chain(sample.slow_add.s(i, 1, 0.3), sample.slow_add.s(10, 0.3), sample.slow_add.s(100, 0.3)).enqueue()
              for i in range(8)}
    chords = {j: chord([sample.slow_add.s(j, k, 0.2) for k in range(5)], sample.total_once.s(f"chord-{j}")).enqueue()
              for j in range(6)}
    nested = chain(sample.slow_add.s(1, 1, 0.2),
                   chord([sample.slow_add.s(k, 0.2) for k in range(1, 5)], sample.total_once.s("nested")),
                   sample.slow_add.s(1000)).enqueue()
    failing_chain = chain(sample.slow_add.s(1, 1, 0.2), sample.broken.si("stop here"), sample.slow_add.s(1)).enqueue()
    failing_chord = chord([sample.slow_add.s(1, 1, 0.2), sample.broken.si("a member fails")],
                          sample.total_once.s("never")).enqueue()
    everything = [*chains.values(), *chords.values(), nested, failing_chain, failing_chord]

    victim = start("--concurrency", "2")
    start("--concurrency", "2")
    wait_for(lambda: sum(1 for f in everything if f.refresh().finished) >= 3, timeout=120)
    running = models.TaskResult.objects.filter(state="running", worker__endswith=f"/{victim.pid}")
    wait_for(running.exists, timeout=30)  # kill it with workflow tasks in its hands
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)
    in_flight = set(running.values_list("id", flat=True))
    start("--concurrency", "2")
    wait_for(lambda: all(f.refresh().finished for f in everything), timeout=240)

    assert {i: f.state for i, f in chains.items()} == {i: "succeeded" for i in chains}
    assert {i: f.return_value for i, f in chains.items()} == {i: i + 111 for i in chains}
    assert {j: f.return_value for j, f in chords.items()} == {j: 5 * j + 10 for j in chords}
    assert nested.return_value == 1018  # 2, then [3, 4, 5, 6], 18, + 1000
    for tag in [f"chord-{j}" for j in chords] + ["nested"]:
        [callback] = callbacks(tag)  # enqueued once
        assert (callback.state, tally(tag)) == ("succeeded", 1)  # and its effect happened once

    assert failing_chain.state == "failed"
    first, failed = failing_chain.tasks()  # the third step never started
    assert failing_chain.error == (failed.id, "builtins.ValueError", "stop here")
    assert [s.state for s in failing_chain.steps()] == ["failed", "succeeded", "failed", "cancelled"]
    assert failing_chord.state == "failed" and failing_chord.error[2] == "a member fails"
    assert callbacks("never") == [] and tally("never") == 0

    wait_for(lambda: not models.TaskResult.objects.exclude(state__in=models.FINISHED).exists(), timeout=60)
    ran = models.TaskResult.objects.exclude(state="cancelled")
    assert in_flight and all(t.lost >= 1 for t in ran if t.id in in_flight)  # run again after the kill
    assert all(t.attempts == t.lost + 1 for t in ran)  # and only then
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM scheduler_workflowstep WHERE state IN ('running', 'pending')")
        assert cursor.fetchone()[0] == 0  # every step ended: none waits for a task that will not come
    assert not share.models.ShareDelivery.objects.exists()
