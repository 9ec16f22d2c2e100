"""manage.py tasks workflows|workflow|cancel-workflow, and what tasks show says of a workflow's task."""
import re

from django.db import transaction

from scheduler import models, workflows
from scheduler.workflows import chain, chord
from tests.sampleapp import tasks as sample
from tests.scheduler.test_workflows import settle


def test_tasks_workflow_shows_the_steps_and_tasks_show_names_the_workflow(transactional_db, manage):
    flow = chain(sample.add.s(1, 1), chord([sample.mul.s(2), sample.mul.s(3)], sample.total.s())).enqueue()
    with transaction.atomic():
        settle(flow.steps()[1], 2)
    member = flow.steps()[4]  # step 2.1.1
    shown = manage("tasks", "workflow", str(flow.id))
    assert shown.returncode == 0, shown.stderr
    assert re.search(r"^workflow +chain\(add, chord\(group\(mul×2\), total\)\)$", shown.stdout, re.M)
    assert re.search(r"^state +running$", shown.stdout, re.M)
    assert re.search(r"^STEP +KIND +TASK +TASK-ID +STATE +RESULT$", shown.stdout, re.M)
    assert re.search(r"^1 +task +tests\.sampleapp\.tasks\.add +\S+ +succeeded +2$", shown.stdout, re.M)
    assert re.search(rf"^2\.1\.1 +task +tests\.sampleapp\.tasks\.mul +{member.task_id} +running +-$",
                     shown.stdout, re.M)
    assert re.search(r"^2\.2 +task +tests\.sampleapp\.tasks\.total +- +pending +-$", shown.stdout, re.M)
    task = manage("tasks", "show", str(member.task_id))
    assert task.returncode == 0, task.stderr
    assert re.search(rf"^workflow +{flow.id} step 2\.1\.1 of chain\(add, chord", task.stdout, re.M)
    plain = manage("tasks", "show", str(sample.add.enqueue(1, 2).id))
    assert "workflow" not in plain.stdout


def test_tasks_workflows_lists_them_and_cancel_workflow_cancels_one(transactional_db, manage):
    failed = chain(sample.add.s(1, 1), sample.add.s(1)).enqueue()
    with transaction.atomic():
        settle(failed.steps()[1], None, fail=True)
    running = chord([sample.add.s(1, 1), sample.add.s(2, 2)], sample.total.s()).enqueue()
    listed = manage("tasks", "workflows")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["ID", "WORKFLOW", "STATE", "CREATED", "FINISHED"]
    assert lines[-1] == "2 workflow(s)."
    only_failed = manage("tasks", "workflows", "--state", "failed")
    assert str(failed.id) in only_failed.stdout and str(running.id) not in only_failed.stdout
    shown = manage("tasks", "workflow", str(failed.id))
    assert re.search(rf"^failed task +{failed.tasks()[0].id}$", shown.stdout, re.M)
    assert re.search(r"^error +x\.Error: failed$", shown.stdout, re.M)
    cancelled = manage("tasks", "cancel-workflow", str(running.id))
    assert (cancelled.returncode, cancelled.stdout.strip()) == (
        0, f"Cancelled workflow {running.id} (2 task(s) not started cancelled).")
    assert {t.state for t in running.tasks()} == {"cancelled"}
    again = manage("tasks", "cancel-workflow", str(running.id))
    assert again.returncode == 2 and again.stderr.strip().endswith(
        f"Workflow {running.id} is in state cancelled: only a running workflow can be cancelled.")
    missing = manage("tasks", "workflow", "nope")
    assert missing.returncode == 2 and missing.stderr.strip().endswith("Workflow nope does not exist.")
    assert workflows.get(failed.id).state == models.Workflow.State.FAILED
