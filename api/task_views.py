"""Thin REST views over the task layer: submit, read, list, cancel and retry tasks; submit workflows."""
from django.db import transaction
from django.urls import reverse
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import pagination, status
from rest_framework.response import Response

from api import idempotency, permissions
from api import task_serializers as shapes
from api.views import Base
from scheduler import control, results, selectors, tasks, workflows

LOCATION = OpenApiParameter("Location", type=str, location=OpenApiParameter.HEADER, response=[202],
                            description="where to poll the new task or workflow")


class Cursor(pagination.CursorPagination):
    ordering = ("-enqueued_at", "-id")
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200


def _task(request, task_id, kind="task"):
    """The Result of a task the caller may see (a key needs a task scope on its name)."""
    result = results.get(task_id)
    if permissions.narrowed(request):
        permissions.require(request, kind, result.row.task_name)
    return result


class TaskList(Base):
    required_permission = "scheduler.view_taskresult"
    required_scope = ("task", "operate")
    required_by_method = {"POST": ("scheduler.add_taskresult", "task")}

    @extend_schema(parameters=[shapes.TaskQuery], responses=shapes.TaskPage, operation_id="tasks_list")
    def get(self, request):
        query = shapes.TaskQuery(data=request.query_params.dict())
        query.is_valid(raise_exception=True)
        rows = selectors.tasks(queue=query.validated_data.get("queue"), state=query.validated_data.get("state"),
                               task_name=query.validated_data.get("name"))
        if permissions.narrowed(request):
            rows = rows.filter(task_name__in=_allowed_names(request))
        paginator = Cursor()
        page = paginator.paginate_queryset(rows, request, view=self)
        return Response({"next": paginator.get_next_link(), "previous": paginator.get_previous_link(),
                         "results": [shapes.task_data(results.Result(row)) for row in page]})

    @extend_schema(request=shapes.TaskIn, responses={202: shapes.TaskOut}, parameters=[LOCATION])
    @idempotency.idempotent
    def post(self, request):
        given = shapes.TaskIn(data=request.data)
        given.is_valid(raise_exception=True)
        data = given.validated_data
        task = shapes.http_task(data["name"])
        permissions.require(request, "task", task.name)
        options = {k: data[k] for k in ("queue", "priority", "countdown", "eta", "unique_key") if k in data}
        with transaction.atomic():  # a refusal by the engine (an ETA too far) leaves nothing behind
            result = (task.using(**options) if options else task).enqueue(*data["args"], **data["kwargs"])
        location = reverse("v1:task", args=[result.id])
        return Response(shapes.task_data(result), status=status.HTTP_202_ACCEPTED, headers={"Location": location})


def _allowed_names(request):
    """The names of the registered tasks the key's task scopes match."""
    return [name for name in tasks.registered() if permissions.allows(request, "task", name)]


class TaskDetail(Base):
    required_permission = "scheduler.view_taskresult"
    required_scope = ("task", "operate")

    @extend_schema(responses=shapes.TaskDetailOut)
    def get(self, request, task_id):
        return Response(shapes.task_data(_task(request, task_id), detail=True))


class TaskCancel(Base):
    required_permission = "scheduler.change_taskresult"
    required_scope = ("task", "operate")

    @extend_schema(request=None, responses=shapes.TaskOut)
    @idempotency.idempotent
    def post(self, request, task_id):
        _task(request, task_id)
        return Response(shapes.task_data(control.cancel(task_id)))


class TaskRetry(Base):
    required_permission = "scheduler.change_taskresult"
    required_scope = ("task", "operate")

    @extend_schema(request=None, responses=shapes.TaskOut)
    @idempotency.idempotent
    def post(self, request, task_id):
        _task(request, task_id)
        return Response(shapes.task_data(control.retry(task_id)))


class WorkflowList(Base):
    required_permission = "scheduler.add_taskresult"
    required_scope = "task"

    @extend_schema(request={"application/json": {"type": "object", "description": (
        'a task step {"name", "args", "kwargs", "immutable", "queue", "countdown", "eta", "unique_key"}, or '
        '{"chain": [steps]}, {"group": [steps]}, {"chord": {"header": [steps], "body": step}}')}},
        responses={202: shapes.WorkflowOut}, parameters=[LOCATION])
    @idempotency.idempotent
    def post(self, request):
        canvas, names = shapes.canvas(request.data)
        for name in sorted(set(names)):
            permissions.require(request, "task", name)
        flow = workflows.enqueue(canvas)
        location = reverse("v1:workflow", args=[flow.id])
        return Response(shapes.workflow_data(flow), status=status.HTTP_202_ACCEPTED, headers={"Location": location})


class WorkflowDetail(Base):
    required_permission = "scheduler.view_taskresult"
    required_scope = ("task", "operate")

    @extend_schema(responses=shapes.WorkflowOut)
    def get(self, request, workflow_id):
        flow = workflows.get(workflow_id)
        if permissions.narrowed(request):
            for task in flow.tasks():
                permissions.require(request, "task", task.row.task_name)
        return Response(shapes.workflow_data(flow))


class WorkflowCancel(Base):
    required_permission = "scheduler.change_taskresult"
    required_scope = ("task", "operate")

    @extend_schema(request=None, responses=shapes.WorkflowOut)
    @idempotency.idempotent
    def post(self, request, workflow_id):
        flow = workflows.get(workflow_id)
        if permissions.narrowed(request):
            for task in flow.tasks():
                permissions.require(request, "task", task.row.task_name)
        return Response(shapes.workflow_data(workflows.cancel(workflow_id)))
