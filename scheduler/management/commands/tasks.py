"""manage.py tasks list|show|cancel|abort|retry|purge|prune|workflows|workflow|cancel-workflow: look at
tasks and their workflows, and act on them."""
import json
import sys

from django.core.management.base import CommandError

from outbox import retention
from queueing.management.base import EngineCommand, positive
from scheduler import control, exceptions, models, results, selectors, tasks, workflows


def checked_queue(queue):
    """Refuse a name no queue can have, as `worker --queue` does (an empty list would hide the typo)."""
    try:
        tasks.check_queue(queue)
    except exceptions.InvalidTask as error:
        raise CommandError(str(error), returncode=2) from None


def when(value):
    return None if value is None else value.isoformat(timespec="seconds")


class Command(EngineCommand):
    help = ("List tasks, show one with its attempts, cancel one not yet started, abort a running one, retry a "
            "failed one, purge a queue of what has not started, prune old ones; list workflows, show one with "
            "its steps, cancel one.")

    def add_arguments(self, parser):
        actions = parser.add_subparsers(
            dest="action", required=True,
            metavar="{list,show,cancel,abort,retry,purge,prune,workflows,workflow,cancel-workflow}")
        listing = actions.add_parser("list", help="tasks, newest first")
        listing.add_argument("--queue")
        listing.add_argument("--state", choices=models.State.values)
        listing.add_argument("--task", help="a task name")
        listing.add_argument("--limit", type=positive, default=50)
        for name, text in (("show", "a task's state, result, error and attempts"),
                           ("cancel", "cancel a queued, scheduled or retrying task: it will never start"),
                           ("abort", "ask a running task to stop at its next check (or cancel one not started)"),
                           ("retry", "enqueue a failed or cancelled task again, now")):
            actions.add_parser(name, help=text).add_argument("id")
        purge = actions.add_parser("purge", help="cancel every task of a queue that has not started")
        purge.add_argument("--queue", required=True)
        purge.add_argument("--yes", action="store_true", help="do not ask")
        prune = actions.add_parser("prune", help="delete tasks finished longer ago than --older-than")
        prune.add_argument("--older-than", metavar="AGE",
                           help="7d, 12h, 30m or ISO 8601 (P7D); default SLUICE_TASK_RESULT_TTL_S, 7 days")
        flows = actions.add_parser("workflows", help="chains, groups and chords, newest first")
        flows.add_argument("--state", choices=models.Workflow.State.values)
        flows.add_argument("--limit", type=positive, default=50)
        actions.add_parser("workflow", help="a workflow's state, result or error, and its steps").add_argument("id")
        actions.add_parser("cancel-workflow", help="cancel a running workflow: its tasks not started never start"
                           ).add_argument("id")

    def handle(self, *args, action, **options):
        getattr(self, f"do_{action.replace('-', '_')}")(**options)

    def do_list(self, *, queue, state, task, limit, **options):
        if queue is not None:
            checked_queue(queue)
        total, rows = selectors.task_list(queue=queue, state=state, task_name=task, limit=limit)
        self.table(
            ["ID", "TASK", "QUEUE", "STATE", "ATTEMPTS", "ENQUEUED", "FINISHED"],
            [[r.id, r.task_name, r.queue, results.Result(r).state, r.attempts, when(r.enqueued_at),
              when(r.finished_at)] for r in rows],
        )
        self.stdout.write(f"{total} task(s){'' if total <= limit else f'; newest {limit} shown'}.")

    def do_show(self, *, id, **options):
        result = results.get(id)
        row = result.row
        fields = [("id", row.id), ("task", row.task_name), ("queue", row.queue), ("state", result.state),
                  ("args", json.dumps(row.args)), ("kwargs", json.dumps(row.kwargs)), ("priority", row.priority), ("unique key", row.unique_key),
                  ("enqueued", when(row.enqueued_at)), ("eta", when(row.eta)), ("started", when(row.started_at)),
                  ("finished", when(row.finished_at)), ("attempts", row.attempts), ("failures", row.failures),
                  ("lost", row.lost)]
        step = workflows.step_of(row.id)
        if step is not None:
            fields.append(("workflow", f"{step.workflow_id} step {step.path} of {step.workflow.description}"))
        if row.concurrency_key is not None:
            fields.append(("concurrency", f"key {row.concurrency_key}, at most {row.concurrency_limit} at once"))
        if row.abort_requested_at is not None:
            fields.append(("abort asked", when(row.abort_requested_at)))
        if result.progress:
            current, total, message = result.progress
            fields.append(("progress", f"{current}/{'-' if total is None else total} {message}".rstrip()))
        if row.state == models.State.SUCCEEDED:
            fields.append(("result", json.dumps(row.return_value)))  # JSON, as stored: null, true, "text"
        if result.error:
            fields.append(("error", f"{row.error_class}: {row.error_message}"))
        width = max(len(name) for name, _ in fields)
        for name, value in fields:
            self.stdout.write(f"{name.ljust(width)}  {'-' if value is None else value}")
        attempts = result.attempts()
        if attempts:
            self.stdout.write("")
            self.table(["ATTEMPT", "WORKER", "STARTED", "ENDED", "OUTCOME", "ERROR"],
                       [[a.number, a.worker, when(a.started_at), when(a.ended_at), a.outcome,
                         f"{a.error_class}: {a.error_message}" if a.error_class else None] for a in attempts])
        if row.traceback:
            self.stdout.write("")
            self.stdout.write(row.traceback.rstrip())

    def do_cancel(self, *, id, **options):
        control.cancel(id)
        self.stdout.write(f"Cancelled task {id}.")

    def do_abort(self, *, id, **options):
        result = control.abort(id)
        if result.state == models.State.CANCELLED:
            self.stdout.write(f"Cancelled task {id} (it had not started).")
        else:
            self.stdout.write(f"Abort of task {id} requested: it stops at its next check.")

    def do_purge(self, *, queue, yes, **options):
        checked_queue(queue)
        waiting = control.not_started(queue)
        if not waiting:
            self.stdout.write(f"No task of queue {queue!r} is waiting to start: nothing purged.")
            return
        if not yes:
            if not sys.stdin.isatty():
                raise CommandError(f"{waiting} task(s) of queue {queue!r} would be cancelled: give --yes "
                                   "(standard input is not a terminal to ask)", returncode=2)
            answer = input(f"Cancel {waiting} task(s) of queue {queue!r} that have not started? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                self.stdout.write("Nothing purged.")
                return
        total = control.purge(queue)
        self.stdout.write(f"Cancelled {total} task(s) of queue {queue!r} that had not started.")

    def do_retry(self, *, id, **options):
        control.retry(id)
        self.stdout.write(f"Task {id} is queued again.")

    def do_prune(self, *, older_than, **options):
        from django.conf import settings

        seconds = settings.SLUICE["TASK_RESULT_TTL_S"] if older_than is None else retention.parse_age(older_than)
        if not seconds:
            self.stdout.write("Keep forever (0): nothing pruned.")
            return
        total = control.prune(keep_s=seconds)
        self.stdout.write(f"Pruned {total} finished task(s) older than {older_than or f'{seconds:g}s'}.")

    def do_workflows(self, *, state, limit, **options):
        total, rows = selectors.workflow_list(state=state, limit=limit)
        self.table(["ID", "WORKFLOW", "STATE", "CREATED", "FINISHED"],
                   [[r.id, r.description, r.state, when(r.created_at), when(r.finished_at)] for r in rows])
        self.stdout.write(f"{total} workflow(s){'' if total <= limit else f'; newest {limit} shown'}.")

    def do_workflow(self, *, id, **options):
        flow = workflows.get(id)
        row = flow.row
        fields = [("id", row.id), ("workflow", row.description), ("state", row.state),
                  ("created", when(row.created_at)), ("finished", when(row.finished_at))]
        if row.state == models.Workflow.State.SUCCEEDED:
            fields.append(("result", row.result))
        if row.error_task_id:
            fields.append(("failed task", row.error_task_id))
        if flow.error:
            error = f"{row.error_class}: {row.error_message}" if row.error_class else row.error_message
            fields.append(("error", error))
        width = max(len(name) for name, _ in fields)
        for name, value in fields:
            self.stdout.write(f"{name.ljust(width)}  {'-' if value is None else value}")
        self.stdout.write("")
        self.table(["STEP", "KIND", "TASK", "TASK-ID", "STATE", "RESULT"],
                   [[s.path or "top", s.kind, s.task_name or None, s.task_id, s.state,
                     _short(s.result) if s.state == models.WorkflowStep.State.SUCCEEDED else None]
                    for s in flow.steps()])

    def do_cancel_workflow(self, *, id, **options):
        flow = workflows.cancel(id)
        cancelled = sum(1 for t in flow.tasks() if t.state == models.State.CANCELLED)
        self.stdout.write(f"Cancelled workflow {id} ({cancelled} task(s) not started cancelled).")


def _short(value, width=60):
    text = str(value)
    return text if len(text) <= width else text[:width - 1] + "…"
