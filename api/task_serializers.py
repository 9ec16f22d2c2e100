"""Input and output shapes of the task endpoints: submissions, tasks, workflows."""
from rest_framework import serializers

from api import fields
from scheduler import exceptions, models, tasks, workflows

MAX_WORKFLOW_TASKS = 1000
MAX_WORKFLOW_DEPTH = 10


class Options(fields.Strict):
    """How one task is enqueued: the options a Task.using() call takes."""

    queue = fields.Text(required=False, max_length=200, help_text="default: the task's own queue")
    priority = fields.Integer(required=False, min_value=tasks.MIN_PRIORITY, max_value=tasks.MAX_PRIORITY)
    countdown = fields.Number(required=False, min_value=0, max_value=366 * 86400, help_text="seconds from now")
    eta = fields.Moment(required=False, help_text="when to run, with its time zone; not with countdown")
    unique_key = fields.Text(required=False, min_length=1, max_length=255,
                             help_text="refused (409) while a task with this key is queued, scheduled or running")

    def validate(self, data):
        if "countdown" in data and "eta" in data:
            raise serializers.ValidationError({"eta": ["give countdown or eta, not both"]})
        return data


class TaskIn(Options):
    name = fields.Text(max_length=255, help_text="a task its code marks http=True")
    args = fields.Array(required=False, default=list)
    kwargs = fields.JSONObject(required=False, default=dict)


class Progress(serializers.Serializer):
    current = serializers.IntegerField(allow_null=True)
    total = serializers.IntegerField(allow_null=True)
    message = serializers.CharField()


class Error(serializers.Serializer):
    type = serializers.CharField(help_text="the exception's class path")
    message = serializers.CharField()


class AttemptOut(serializers.Serializer):
    number = serializers.IntegerField()
    worker = serializers.CharField()
    started_at = serializers.DateTimeField()
    ended_at = serializers.DateTimeField(allow_null=True)
    outcome = serializers.CharField()
    error = Error(allow_null=True)


class TaskOut(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()
    queue = serializers.CharField()
    state = serializers.ChoiceField(choices=models.State.values)
    priority = serializers.IntegerField()
    args = serializers.JSONField()
    kwargs = serializers.JSONField()
    unique_key = serializers.CharField(allow_null=True)
    enqueued_at = serializers.DateTimeField()
    eta = serializers.DateTimeField(allow_null=True)
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    attempts = serializers.IntegerField(help_text="runs started")
    failures = serializers.IntegerField()
    result = serializers.JSONField(allow_null=True, help_text="what the task returned, once it succeeded")
    error = Error(allow_null=True, help_text="its last failure")
    progress = Progress(allow_null=True)


class TaskDetailOut(TaskOut):
    attempt_list = AttemptOut(many=True, help_text="every run so far, oldest first")


class TaskPage(serializers.Serializer):
    next = serializers.CharField(allow_null=True, help_text="the URL of the next page (older tasks)")
    previous = serializers.CharField(allow_null=True)
    results = TaskOut(many=True)


class TaskQuery(fields.Strict):
    """The list's filters; any other query parameter is refused."""

    queue = fields.Text(required=False, max_length=200)
    state = fields.Choice(choices=models.State.values, required=False)
    name = fields.Text(required=False, max_length=255)
    cursor = fields.Text(required=False, max_length=1000)
    page_size = serializers.IntegerField(required=False, min_value=1, max_value=200)


class WorkflowTaskOut(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()
    state = serializers.CharField()


class WorkflowOut(serializers.Serializer):
    id = serializers.UUIDField()
    description = serializers.CharField()
    state = serializers.CharField()
    created_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)
    result = serializers.JSONField(allow_null=True)
    error = serializers.DictField(allow_null=True)
    tasks = WorkflowTaskOut(many=True)


def task_data(result, *, detail=False):
    """The TaskOut (or TaskDetailOut) of a scheduler Result."""
    row = result.row
    error = result.error
    progress = result.progress
    data = {
        "id": row.id, "name": row.task_name, "queue": row.queue, "state": result.state, "priority": row.priority,
        "args": row.args, "kwargs": row.kwargs, "unique_key": row.unique_key, "enqueued_at": row.enqueued_at,
        "eta": row.eta, "started_at": row.started_at, "finished_at": row.finished_at, "attempts": row.attempts,
        "failures": row.failures, "result": row.return_value if row.state == models.State.SUCCEEDED else None,
        "error": {"type": error[0], "message": error[1]} if error else None,
        "progress": None if progress is None else dict(zip(("current", "total", "message"), progress)),
    }
    if not detail:
        return TaskOut(data).data
    data["attempt_list"] = [
        {"number": a.number, "worker": a.worker, "started_at": a.started_at, "ended_at": a.ended_at,
         "outcome": a.outcome, "error": {"type": a.error_class, "message": a.error_message} if a.error_class else None}
        for a in result.attempts()]
    return TaskDetailOut(data).data


def workflow_data(flow):
    error = flow.error
    return WorkflowOut({
        "id": flow.id, "description": flow.row.description, "state": flow.state, "created_at": flow.row.created_at,
        "finished_at": flow.row.finished_at, "result": flow.row.result,
        "error": {"task_id": str(error[0]) if error[0] else None, "type": error[1], "message": error[2]}
        if error else None,
        "tasks": [{"id": t.id, "name": t.row.task_name, "state": t.state} for t in flow.tasks()],
    }).data


class WorkflowStepIn(Options):
    """One task of a workflow: in a chain it gets the previous step's result first, unless immutable."""

    name = fields.Text(max_length=255)
    args = fields.Array(required=False, default=list)
    kwargs = fields.JSONObject(required=False, default=dict)
    immutable = fields.Boolean(required=False, default=False)
    priority = None  # a workflow's tasks run at their task's own priority


KINDS = ("chain", "group", "chord")


def canvas(spec):
    """The scheduler canvas a workflow request describes, and the names of its tasks (for scopes).

    A node is a task step ({"name", "args", ...}), {"chain": [nodes]}, {"group": [nodes]} or
    {"chord": {"header": [nodes], "body": node}}. Raises ValidationError with the failing node's path.
    """
    names = []
    built = _node(spec, "", 0, names)
    return built, names


def _fail(path, message):
    raise serializers.ValidationError({path.lstrip("/") or "non_field_errors": [message]})


def _node(spec, path, depth, names):
    if depth > MAX_WORKFLOW_DEPTH:
        _fail(path, f"workflows nest at most {MAX_WORKFLOW_DEPTH} levels")
    if not isinstance(spec, dict):
        _fail(path, "a step is a JSON object")
    kinds = [kind for kind in KINDS if kind in spec]
    if not kinds:
        return _task(spec, path, names)
    if len(spec) != 1:
        _fail(path, "a chain, group or chord is an object with that one key")
    kind = kinds[0]
    if kind == "chord":
        body = spec["chord"]
        if not isinstance(body, dict) or set(body) != {"header", "body"}:
            _fail(f"{path}/chord", 'a chord is {"header": [steps], "body": step}')
        header = _list(body["header"], f"{path}/chord/header", depth, names)
        return workflows.chord(workflows.group(*header), _node(body["body"], f"{path}/chord/body", depth + 1, names))
    steps = _list(spec[kind], f"{path}/{kind}", depth, names)
    return workflows.chain(*steps) if kind == "chain" else workflows.group(*steps)


def _list(items, path, depth, names):
    if not isinstance(items, list) or not items:
        _fail(path, "a non-empty JSON array of steps is expected")
    return [_node(item, f"{path}/{index}", depth + 1, names) for index, item in enumerate(items)]


def _task(spec, path, names):
    given = WorkflowStepIn(data=spec)
    if not given.is_valid():
        raise serializers.ValidationError({path.lstrip("/") or "non_field_errors": given.errors})
    data = given.validated_data
    if len(names) >= MAX_WORKFLOW_TASKS:
        _fail(path, f"a workflow has at most {MAX_WORKFLOW_TASKS} tasks")
    task = http_task(data["name"], f"{path}/name")
    names.append(task.name)
    signature = (task.si if data["immutable"] else task.s)(*data["args"], **data["kwargs"])
    options = {k: data[k] for k in ("queue", "countdown", "eta", "unique_key") if k in data}
    return signature.set(**options) if options else signature


def http_task(name, pointer="name"):
    """The task of that name that may be submitted over HTTP; ValidationError (unknown task) otherwise."""
    try:
        return tasks.http_task(name)
    except exceptions.TaskNotRegistered:
        _fail(pointer, f"unknown task {name!r}: no task of that name may be submitted over HTTP")
