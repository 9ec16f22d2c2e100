"""Workflows of tasks: signatures, chains, groups and chords, stored as a tree of steps and advanced
in the transaction that records each task's outcome."""
import datetime
import logging

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F
from django.db.models.functions import Now
from django.utils import timezone

from queueing import exceptions as engine_exceptions
from scheduler import control, exceptions, models, results, tasks

logger = logging.getLogger("sluice.workflows")
Step = models.WorkflowStep
NOTHING = object()  # what a step is started with when there is no previous result


# Building a workflow ---------------------------------------------------------------------


class Signature:
    """One task call, not yet enqueued: the task (with its options), its arguments, and whether it
    takes the previous step's result as its first argument (not if immutable)."""

    kind = Step.Kind.TASK

    def __init__(self, task, args, kwargs, *, immutable=False):
        args, kwargs = list(args), dict(kwargs)
        tasks.check_json(args, what="arguments", task=task.name)
        tasks.check_json(kwargs, what="arguments", task=task.name)
        task._due()  # a countdown or an eta that enqueue would refuse is refused now
        self.task, self.args, self.kwargs, self.immutable = task, args, kwargs, immutable

    def set(self, *, queue=None, countdown=None, eta=None, unique_key=None):
        """Return this signature with its task's options changed (as Task.using; a unique key is a string)."""
        if unique_key is not None and not isinstance(unique_key, str):
            raise exceptions.InvalidWorkflow(reason="a workflow step's unique key is a string")
        task = self.task.using(queue=queue, countdown=countdown, eta=eta, unique_key=unique_key)
        return Signature(task, self.args, self.kwargs, immutable=self.immutable)

    def enqueue(self):
        """Enqueue this call as a plain task (no workflow); return its Result."""
        return self.task.enqueue(*self.args, **self.kwargs)

    def options(self):
        eta, key = self.task.eta, self.task.unique_key
        return {"queue": self.task.queue, "countdown": self.task.countdown, "eta": eta and eta.isoformat(),
                "unique_key": key if isinstance(key, str) else None}

    def describe(self):
        return self.task.name.rsplit(".", 1)[-1]

    def __or__(self, other):
        return chain(self, other)

    def __repr__(self):
        return f"<Signature {self.task.name}({self.args}, {self.kwargs})>"


class Canvas:
    """A chain, group or chord: steps (signatures or canvases) run in an order of its kind."""

    kind = None

    def __init__(self, steps):
        self.steps = tuple(steps)
        for step in self.steps:
            if not isinstance(step, (Signature, Canvas)):
                raise exceptions.InvalidWorkflow(
                    reason=f"a step is a signature (task.s()) or a canvas, not {step!r:.80}")

    def enqueue(self):
        """Store the workflow and start its first tasks, in one transaction (the caller's, if any);
        return its WorkflowResult."""
        return enqueue(self)

    def describe(self):
        if self.kind != Step.Kind.GROUP:
            return f"{self.kind}({', '.join(s.describe() for s in self.steps)})"
        parts, last, count = [], None, 0  # a group's runs of one task read as add×6
        for text in [s.describe() for s in self.steps] + [None]:
            if text == last:
                count += 1
                continue
            if last is not None:
                parts.append(last if count == 1 else f"{last}×{count}")
            last, count = text, 1
        return f"{self.kind}({', '.join(parts)})"

    def __or__(self, other):
        return chain(self, other)


class Chain(Canvas):
    kind = Step.Kind.CHAIN


class Group(Canvas):
    kind = Step.Kind.GROUP


class Chord(Canvas):
    """A group, then a callback given the list of its results: stored as its two steps."""

    kind = Step.Kind.CHORD


def chain(*steps):
    """Run steps one after the other, each task given the previous step's result first."""
    if not steps:
        raise exceptions.InvalidWorkflow(reason="a chain needs at least one step")
    return Chain(steps)


def group(*members):
    """Run members in parallel; the group's result is the list of theirs, in order. Takes the
    members, or one iterable of them."""
    if len(members) == 1 and not isinstance(members[0], (Signature, Canvas)):
        members = tuple(members[0])
    return Group(members)


def chord(header, body):
    """Run header (a group, or an iterable of members) and then body, once, with its list of results."""
    if not isinstance(header, Group):
        header = group(header)
    if not isinstance(body, (Signature, Canvas)):
        raise exceptions.InvalidWorkflow(reason=f"a chord's callback is a signature or a canvas, not {body!r:.80}")
    return Chord((header, body))


def enqueue(canvas):
    """Store canvas as a workflow and start its first tasks, in one transaction (the caller's, if
    any); return its WorkflowResult."""
    with transaction.atomic():
        workflow = models.Workflow.objects.create(description=canvas.describe()[:255])
        top = _store(workflow, canvas)
        _start(workflow, top, NOTHING)
    return get(workflow.id)


def _store(workflow, canvas):
    """Write the tree's steps, one INSERT a level; return the top one."""
    top = Step(workflow=workflow, parent=None, position=1, path="", kind=canvas.kind)
    level = [(top, canvas)]
    while level:
        Step.objects.bulk_create([step for step, _ in level])
        below = []
        for parent, node in level:
            for position, child in enumerate(getattr(node, "steps", ()), start=1):
                step = Step(workflow=workflow, parent=parent, position=position, kind=child.kind,
                            path=f"{parent.path}.{position}".lstrip("."))
                if isinstance(child, Signature):
                    step.task_name, step.args, step.kwargs = child.task.name, child.args, child.kwargs
                    step.options, step.immutable = child.options(), child.immutable
                below.append((step, child))
        level = below
    return top


# Running it: each call is in the transaction that recorded a task's outcome -----------------


def task_settled(data):
    """Advance the workflow of a task whose outcome the caller's transaction recorded (the worker's,
    which acknowledges the task's record): start the next step, count a group's member, or end the
    workflow. data is the task's record; a task outside any workflow returns at once.

    The workflow's row is locked first, so the outcomes of its tasks are taken one at a time: a
    group's last member is counted once, and its chord's callback started once. A rolled-back
    outcome (a worker dead before its commit) rolls this back with it; the rerun does it again.
    """
    step_id = data.get("step") if isinstance(data, dict) else None
    if step_id is None:
        return
    workflow = models.Workflow.objects.select_for_update().filter(id=data.get("workflow")).first()
    step = Step.objects.filter(id=step_id, task_id=data.get("id")).first()
    if workflow is None or step is None or step.state != Step.State.RUNNING:
        return  # pruned, or this outcome was taken already
    task = models.TaskResult.objects.get(id=step.task_id)
    if task.state == models.State.SUCCEEDED:
        if workflow.state != models.Workflow.State.RUNNING:
            _finish(step, Step.State.SUCCEEDED, task.return_value)  # kept, but nothing follows it
            return
        try:
            with transaction.atomic():
                _succeed(workflow, step, task.return_value)
        except engine_exceptions.QueueingError as error:  # a next task refused (a unique key taken, say)
            _finish(step, Step.State.SUCCEEDED, task.return_value)
            _stop(workflow, models.Workflow.State.FAILED, failed=step, error_class=_path(error),
                  error_message=f"the step after {step.path} could not start: {error}")
    elif task.state == models.State.FAILED:
        _finish(step, Step.State.FAILED, None)
        if workflow.state == models.Workflow.State.RUNNING:
            _stop(workflow, models.Workflow.State.FAILED, failed=step, task_id=task.id,
                  error_class=task.error_class, error_message=task.error_message)
    elif task.state == models.State.RETRYING and workflow.state != models.Workflow.State.RUNNING:
        control.cancel_locked(task)  # failed or cancelled meanwhile: its next run must not start
        _finish(step, Step.State.CANCELLED, None)


def task_cancelled(row):
    """Cancel the workflow of a task cancelled by hand (its step can never finish), in the caller's
    transaction, which locked the task's row."""
    tasks_cancelled([row.id])


def tasks_cancelled(task_ids):
    """task_cancelled for the tasks of task_ids (one read finds the few that are workflow steps)."""
    for step in Step.objects.filter(task_id__in=task_ids).order_by("workflow_id", "id"):
        workflow = models.Workflow.objects.select_for_update().get(id=step.workflow_id)
        step.refresh_from_db()  # a step of the same workflow cancelled just before may have changed it
        if step.state in (Step.State.CANCELLED, Step.State.SUCCEEDED, Step.State.FAILED):
            continue
        _finish(step, Step.State.CANCELLED, None)
        if workflow.state == models.Workflow.State.RUNNING:
            _stop(workflow, models.Workflow.State.CANCELLED, task_id=step.task_id,
                  error_message=f"its task {step.task_id} (step {step.path}) was cancelled")


def _start(workflow, step, value):
    """Start a step given the previous step's result (or NOTHING): enqueue its task, or start its
    first child (chain, chord) or every child (group)."""
    if step.kind == Step.Kind.TASK:
        _start_tasks(workflow, [step], value)
        return
    children = list(step.children.order_by("position"))
    step.state, step.started_at = Step.State.RUNNING, timezone.now()
    step.remaining = len(children) if step.kind == Step.Kind.GROUP else 0
    step.save(update_fields=["state", "started_at", "remaining"])
    if step.kind != Step.Kind.GROUP:
        _start(workflow, children[0], value)
        return
    if not children:
        _succeed(workflow, step, [])
        return
    # A group's members of one task and options go in one enqueue_many (a COPY past 64 of them).
    alike = {}
    for child in children:
        if child.kind == Step.Kind.TASK:
            alike.setdefault((child.task_name, repr(sorted(child.options.items()))), []).append(child)
        else:
            _start(workflow, child, value)
    for members in alike.values():
        _start_tasks(workflow, members, value)


def _start_tasks(workflow, steps, value):
    """Enqueue the tasks of steps, all of one task and options, each carrying its step."""
    calls = [(([] if value is NOTHING or s.immutable else [value]) + list(s.args), s.kwargs) for s in steps]
    started = _task_of(steps[0]).enqueue_many(calls, steps=[{"workflow": str(workflow.id), "step": s.id}
                                                            for s in steps])
    now = timezone.now()
    for step, result in zip(steps, started):
        step.state, step.started_at, step.task_id = Step.State.RUNNING, now, result.id
    Step.objects.bulk_update(steps, ["state", "started_at", "task_id"])


def _task_of(step):
    """The step's task with its options; a bare definition if this process does not know the task
    (a worker of another queue's code): the worker that runs it will."""
    try:
        task = tasks.get(step.task_name)
    except exceptions.TaskNotRegistered:
        task = tasks.Task(name=step.task_name, func=None)
    eta = step.options.get("eta")
    return task.using(queue=step.options.get("queue"), countdown=step.options.get("countdown"),
                      eta=datetime.datetime.fromisoformat(eta) if eta else None,
                      unique_key=step.options.get("unique_key"))


def _succeed(workflow, step, value):
    """Record a step's result and go on: the next step of its chain or chord, its group's count,
    or the workflow's end."""
    _finish(step, Step.State.SUCCEEDED, value)
    parent = step.parent
    if parent is None:
        workflow.state, workflow.result, workflow.finished_at = models.Workflow.State.SUCCEEDED, value, timezone.now()
        workflow.save(update_fields=["state", "result", "finished_at"])
        return
    if parent.kind == Step.Kind.GROUP:
        Step.objects.filter(id=parent.id).update(remaining=F("remaining") - 1)
        parent.refresh_from_db(fields=["remaining"])
        if parent.remaining == 0:
            _succeed(workflow, parent, list(parent.children.order_by("position").values_list("result", flat=True)))
        return
    following = parent.children.filter(position=step.position + 1).first()
    if following is None:
        _succeed(workflow, parent, value)
    else:
        _start(workflow, following, value)


def _finish(step, state, value):
    step.state, step.result, step.finished_at = state, value, timezone.now()
    step.save(update_fields=["state", "result", "finished_at"])


def _stop(workflow, state, *, failed=None, task_id=None, error_class="", error_message=""):
    """End a workflow that failed or was cancelled: its tasks not started are cancelled and no step
    starts any more. A task running now finishes, and its result is kept on its step."""
    workflow.state, workflow.finished_at = state, timezone.now()
    workflow.error_task_id, workflow.error_class, workflow.error_message = task_id, error_class, error_message
    workflow.save(update_fields=["state", "finished_at", "error_task_id", "error_class", "error_message"])
    started = Step.objects.filter(workflow=workflow, kind=Step.Kind.TASK, state=Step.State.RUNNING)
    # SKIP LOCKED: a task row locked elsewhere is being started by a worker (it runs, and its
    # outcome finds the workflow stopped) or is in an outcome transaction (which, after this one,
    # cancels a retry); waiting for it could deadlock, as those lock the task before the workflow.
    pending = models.TaskResult.objects.select_for_update(skip_locked=True).filter(
        id__in=started.values("task_id"), state__in=control.NOT_STARTED)
    cancelled = []
    for row in pending:
        control.cancel_locked(row)
        cancelled.append(row.id)
    started.filter(task_id__in=cancelled).update(state=Step.State.CANCELLED, finished_at=Now())
    above = _ancestor_paths(failed.path) if failed is not None else []
    composite = Step.objects.filter(workflow=workflow, state=Step.State.RUNNING).exclude(kind=Step.Kind.TASK)
    composite.filter(path__in=above).update(state=Step.State.FAILED, finished_at=Now())
    composite.update(state=Step.State.CANCELLED, finished_at=Now())
    Step.objects.filter(workflow=workflow, state=Step.State.PENDING).update(state=Step.State.CANCELLED)
    logger.info("workflow %s %s: %s", workflow.id, state, error_message or "by hand",
                extra={"workflow": str(workflow.id), "task_id": str(task_id) if task_id else None})


def _ancestor_paths(path):
    parts = path.split(".") if path else []
    return [".".join(parts[:n]) for n in range(len(parts))]


def _path(error):
    kind = type(error)
    return f"{kind.__module__}.{kind.__qualname__}"


# Reading and acting on one ------------------------------------------------------------------


def get(workflow_id):
    """The WorkflowResult of a workflow by id; raise WorkflowNotFound."""
    try:
        return WorkflowResult(models.Workflow.objects.get(id=workflow_id))
    except (models.Workflow.DoesNotExist, ValidationError, ValueError):
        raise exceptions.WorkflowNotFound(id=workflow_id) from None


def step_of(task_id):
    """The workflow step a task runs, or None."""
    return Step.objects.filter(task_id=task_id).select_related("workflow").first()


def cancel(workflow_id):
    """Cancel a running workflow: its tasks not yet started never start, nor does any later step
    (a task running now finishes). Return its WorkflowResult. Raises WorkflowNotFound,
    WorkflowNotCancellable."""
    with transaction.atomic():
        try:
            workflow = models.Workflow.objects.select_for_update().get(id=workflow_id)
        except (models.Workflow.DoesNotExist, ValidationError, ValueError):
            raise exceptions.WorkflowNotFound(id=workflow_id) from None
        if workflow.state != models.Workflow.State.RUNNING:
            raise exceptions.WorkflowNotCancellable(id=workflow_id, state=workflow.state)
        _stop(workflow, models.Workflow.State.CANCELLED)
    return get(workflow_id)


def tree_order(step):
    """Sort key of steps in the tree's order (2.10 after 2.9)."""
    return [int(p) for p in step.path.split(".")] if step.path else []


class WorkflowResult:
    """A workflow's state as last read; refresh() reads it again, wait() until it is finished."""

    def __init__(self, row):
        self._row = row

    @property
    def id(self):
        return self._row.id

    @property
    def row(self):
        return self._row

    @property
    def state(self):
        return models.Workflow.State(self._row.state)

    @property
    def finished(self):
        return self._row.state != models.Workflow.State.RUNNING

    @property
    def return_value(self):
        """The last step's result (a group's: the list of its members'); raise ValueError if the
        workflow has not succeeded."""
        if self._row.state != models.Workflow.State.SUCCEEDED:
            raise ValueError(f"workflow {self.id} is {self._row.state}, it has no return value")
        return self._row.result

    @property
    def error(self):
        """(failing task id, exception class path, message) of a failed or cancelled workflow, or None."""
        row = self._row
        return (row.error_task_id, row.error_class, row.error_message) if row.error_message else None

    def steps(self):
        """Every step (WorkflowStep rows) in the tree's order, the top one first."""
        return sorted(Step.objects.filter(workflow_id=self.id), key=tree_order)

    def tasks(self):
        """The Results of the tasks started so far, in the tree's order."""
        ids = [s.task_id for s in self.steps() if s.task_id is not None]
        rows = models.TaskResult.objects.in_bulk(ids)
        return [results.Result(rows[i]) for i in ids if i in rows]

    def refresh(self):
        self._row = get(self.id).row
        return self

    def wait(self, timeout):
        """Read the row until the workflow is finished (succeeded, failed or cancelled), at most
        timeout seconds; return self, or raise WorkflowTimeout."""
        if not results.poll(lambda: self.refresh().finished, timeout):
            raise exceptions.WorkflowTimeout(id=self.id, timeout=timeout, state=self.state)
        return self

    def __repr__(self):
        return f"<WorkflowResult {self._row.description}[{self.id}] {self._row.state}>"
