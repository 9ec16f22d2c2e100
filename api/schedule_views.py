"""Thin REST views over periodic schedules: list, create, change, enable, disable, run now."""
from django.db import transaction
from django.urls import reverse
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response

from api import fields, idempotency, permissions
from api import task_serializers as task_shapes
from api.views import Base
from scheduler import models, schedules


class ScheduleIn(fields.Strict):
    """A schedule: exactly one of cron, every (seconds; at is then its first tick) and at (once)."""

    name = fields.Text(max_length=200)
    task = fields.Text(max_length=255, help_text="a task its code marks http=True")
    cron = fields.Text(required=False, max_length=200, help_text="five fields, or six with seconds first")
    every = fields.Number(required=False, min_value=1, max_value=366 * 86400, help_text="seconds")
    at = fields.Moment(required=False)
    timezone = fields.Text(required=False, default="UTC", max_length=64, help_text="an IANA time zone")
    args = fields.Array(required=False, default=list)
    kwargs = fields.JSONObject(required=False, default=dict)
    catch_up = fields.Choice(choices=models.Schedule.CatchUp.values, required=False,
                             default=models.Schedule.CatchUp.ONCE)
    catch_up_limit = fields.Integer(required=False, default=10, min_value=1, max_value=1000)
    enabled = fields.Boolean(required=False, default=True)


class ScheduleChangeIn(ScheduleIn):
    """What to change; anything left out stays."""

    name = None
    task = fields.Text(required=False, max_length=255)
    timezone = fields.Text(required=False, max_length=64)
    args = fields.Array(required=False)
    kwargs = fields.JSONObject(required=False)
    catch_up = fields.Choice(choices=models.Schedule.CatchUp.values, required=False)
    catch_up_limit = fields.Integer(required=False, min_value=1, max_value=1000)
    enabled = fields.Boolean(required=False)


class ScheduleOut(serializers.Serializer):
    name = serializers.CharField()
    task = serializers.CharField(source="task_name")
    kind = serializers.CharField()
    cron = serializers.CharField()
    every = serializers.SerializerMethodField()
    at = serializers.DateTimeField(allow_null=True)
    timezone = serializers.CharField()
    args = serializers.JSONField()
    kwargs = serializers.JSONField()
    catch_up = serializers.CharField()
    catch_up_limit = serializers.IntegerField()
    enabled = serializers.BooleanField()
    next_run_at = serializers.DateTimeField(allow_null=True)
    last_tick_at = serializers.DateTimeField(allow_null=True)
    last_task_id = serializers.UUIDField(allow_null=True)
    source = serializers.CharField()

    def get_every(self, row) -> float | None:
        return row.interval.total_seconds() if row.interval else None


def _options(request, data):
    """build()'s arguments from the input; the task must be one HTTP may enqueue, with the caller's scope."""
    if "task" in data:
        task = task_shapes.http_task(data["task"], "task")
        permissions.require(request, "task", task.name)
    return dict(data)


def _schedule(request, name):
    """The schedule, if a key may act on its task (operate alone does not let a key run any task)."""
    row = schedules.get(name)
    permissions.require(request, "task", row.task_name)
    return row


class Operate(Base):
    required_scope = "operate"


class ScheduleList(Operate):
    required_permission = "scheduler.view_schedule"
    required_by_method = {"POST": ("scheduler.add_schedule", "operate")}

    @extend_schema(responses=ScheduleOut(many=True))
    def get(self, request):
        return Response(ScheduleOut(models.Schedule.objects.order_by("name"), many=True).data)

    @extend_schema(request=ScheduleIn, responses={201: ScheduleOut})
    @idempotency.idempotent
    def post(self, request):
        given = ScheduleIn(data=request.data)
        given.is_valid(raise_exception=True)
        row = schedules.create(**_options(request, given.validated_data))
        return Response(ScheduleOut(row).data, status=status.HTTP_201_CREATED)


class ScheduleDetail(Operate):
    required_permission = "scheduler.view_schedule"
    required_by_method = {"PATCH": ("scheduler.change_schedule", "operate")}

    @extend_schema(responses=ScheduleOut)
    def get(self, request, name):
        return Response(ScheduleOut(schedules.get(name)).data)

    @extend_schema(request=ScheduleChangeIn, responses=ScheduleOut)
    def patch(self, request, name):
        given = ScheduleChangeIn(data=request.data)
        given.is_valid(raise_exception=True)
        _schedule(request, name)
        return Response(ScheduleOut(schedules.change(name, **_options(request, given.validated_data))).data)


class ScheduleEnable(Operate):
    required_permission = "scheduler.change_schedule"

    @extend_schema(request=None, responses=ScheduleOut)
    @idempotency.idempotent
    def post(self, request, name):
        _schedule(request, name)
        return Response(ScheduleOut(schedules.enable(name)).data)


class ScheduleDisable(Operate):
    required_permission = "scheduler.change_schedule"

    @extend_schema(request=None, responses=ScheduleOut)
    @idempotency.idempotent
    def post(self, request, name):
        _schedule(request, name)
        return Response(ScheduleOut(schedules.disable(name)).data)


class ScheduleRun(Operate):
    required_permission = "scheduler.change_schedule"

    @extend_schema(request=None, responses={202: task_shapes.TaskOut})
    @idempotency.idempotent
    def post(self, request, name):
        _schedule(request, name)
        with transaction.atomic():
            result = schedules.run_now(name)
        return Response(task_shapes.task_data(result), status=status.HTTP_202_ACCEPTED,
                        headers={"Location": reverse("v1:task", args=[result.id])})
