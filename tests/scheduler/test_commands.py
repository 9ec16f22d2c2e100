import datetime
import re

from django.utils import timezone

from scheduler import models
from tests.sampleapp import tasks as sample

SAMPLE = {"SLUICE_EXTRA_APPS": "tests.sampleapp"}


def test_tasks_list_and_show(transactional_db, manage):
    done = sample.add.enqueue(1, 2)
    models.TaskResult.objects.filter(id=done.id).update(state="succeeded", return_value=3, attempts=1,
                                                        finished_at=timezone.now())
    models.TaskAttempt.objects.create(task_id=done.id, number=1, worker="host/1", outcome="succeeded",
                                      ended_at=timezone.now())
    sample.broken.enqueue("x")
    listed = manage("tasks", "list", "--queue", "sample")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["ID", "TASK", "QUEUE", "STATE", "ATTEMPTS", "ENQUEUED", "FINISHED"]
    assert str(done.id) in listed.stdout and "succeeded" in listed.stdout and "queued" in listed.stdout
    assert lines[-1] == "2 task(s)."
    shown = manage("tasks", "show", str(done.id))
    assert shown.returncode == 0, shown.stderr
    assert re.search(r"^result +3$", shown.stdout, re.M) and re.search(r"^state +succeeded$", shown.stdout, re.M)
    assert re.search(r"^args +\[1, 2\]$", shown.stdout, re.M) and re.search(r"^kwargs +\{\}$", shown.stdout, re.M)
    # Arguments and results as JSON, as stored, not Python's repr ({'a': None} was shown for {"a": null}).
    models.TaskResult.objects.filter(id=done.id).update(return_value={"status": "created", "note": None})
    shown = manage("tasks", "show", str(done.id))
    assert re.search(r'^result +\{"note": null, "status": "created"\}$', shown.stdout, re.M), shown.stdout
    assert re.search(r"^1 +host/1 .* succeeded +-$", shown.stdout, re.M)


def test_tasks_cancel_retry_and_prune(transactional_db, manage):
    result = sample.add.enqueue(1, 2)
    cancelled = manage("tasks", "cancel", str(result.id))
    assert (cancelled.returncode, cancelled.stdout.strip()) == (0, f"Cancelled task {result.id}.")
    again = manage("tasks", "cancel", str(result.id))
    assert again.returncode == 2 and again.stderr.strip().endswith(
        f"Task {result.id} is in state cancelled: only a queued, scheduled or retrying task can be cancelled.")
    retried = manage("tasks", "retry", str(result.id))
    assert retried.returncode == 0 and result.refresh().state == "queued"
    control_old = sample.add.enqueue(2, 2)
    models.TaskResult.objects.filter(id=control_old.id).update(
        state="failed", finished_at=timezone.now() - datetime.timedelta(days=2))
    pruned = manage("tasks", "prune", "--older-than", "1d")
    assert (pruned.returncode, pruned.stdout.strip()) == (0, "Pruned 1 finished task(s) older than 1d.")


def test_wrong_arguments_get_a_clear_error_and_exit_code_2(transactional_db, command):
    for args, message in [
        (("tasks", "show", "nope"), "Task nope does not exist"),
        (("tasks", "list", "--state", "odd"), "invalid choice: 'odd'"),
        (("tasks", "prune", "--older-than", "x"), "is not an age"),
        (("worker", "--queue", "sample", "--group", "g"), "give --group or --queue, not both"),
        (("worker", "--queue", "bad name"), "invalid queue name 'bad name'"),
        (("tasks", "list", "--queue", "bad q!"), "invalid queue name 'bad q!'"),
        (("tasks", "purge", "--queue", "bad q!", "--yes"), "invalid queue name 'bad q!'"),
        (("worker", "--queue", "sample", "--concurrency", "0"), "must be at least 1"),
        (("worker", "--queue", "sample", "--concurrency", "100000"), "must be at most 256 (run more workers"),
        # Options of the other kind of worker are refused, not ignored.
        (("worker", "--queue", "sample", "--topic", "x"), "--topic is for a group's worker (--group), not --queue"),
        (("worker", "--queue", "sample", "--max-poll-records", "5"), "--max-poll-records is for a group's worker"),
        (("worker", "--group", "g", "--concurrency", "2", "--grace", "5"),
         "--concurrency and --grace are for a task queue's worker (--queue), not --group"),
        (("worker",), "give --queue Q (a task queue's worker) or --group G (a consumer group's)"),
    ]:
        done = command(*args, env=SAMPLE)
        assert done.returncode == 2 and message in done.stderr, (args, done.stderr)
