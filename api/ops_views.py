"""Thin REST views for operators: groups and their lag, offset resets, dead letters and redrives."""
from drf_spectacular.utils import extend_schema
from rest_framework.response import Response

from api import consume_serializers, idempotency
from api import ops_serializers as shapes
from api.views import Base, who
from queueing import offsets, remote, replay, selectors


class Operate(Base):
    required_scope = "operate"


class GroupList(Operate):
    required_permission = "queueing.view_consumergroup"

    @extend_schema(responses=shapes.GroupOut(many=True))
    def get(self, request):
        return Response(shapes.GroupOut(selectors.group_summaries(), many=True).data)


class GroupDetail(Operate):
    required_permission = "queueing.view_consumergroup"

    @extend_schema(responses=shapes.GroupDetailOut)
    def get(self, request, group):
        rows = selectors.group_partitions(group)
        return Response(shapes.GroupDetailOut({"name": group, "partitions": rows}).data)


class ShareGroupDetail(Operate):
    required_permission = "queueing.view_sharegroup"

    @extend_schema(responses=shapes.ShareGroupDetailOut)
    def get(self, request, group):
        rows = selectors.share_group_partitions(group)
        return Response(shapes.ShareGroupDetailOut({"name": group, "partitions": rows}).data)


class OffsetReset(Operate):
    required_permission = "queueing.change_consumergroup"

    @extend_schema(request=shapes.ResetIn, responses=shapes.ResetOut)
    @idempotency.idempotent
    def post(self, request, group):
        given = shapes.ResetIn(data=request.data)
        given.is_valid(raise_exception=True)
        data = given.validated_data
        scenario, value = data["scenario"], data.get("value")
        plan = offsets.plan_reset(group, topic_specs=data.get("topics") or (), all_topics=data["all_topics"],
                                  scenario=scenario, value=value)
        fenced = None
        if data["execute"] and plan:
            # Audited like the command: the same OffsetReset rows, with the API caller as the actor.
            described = scenario if value is None else f"{scenario} {value}"
            fenced = offsets.execute_reset(plan, actor=f"api: {who(request)}", scenario=described)
        return Response(shapes.ResetOut({"group": group, "executed": fenced is not None, "generation_fenced": fenced,
                                         "plan": plan}).data)


class DeadLetters(Operate):
    required_permission = "queueing.view_record"

    @extend_schema(parameters=[consume_serializers.ReadQuery], responses=consume_serializers.ReadOut)
    def get(self, request, topic, partition):
        query = consume_serializers.ReadQuery(data=request.query_params.dict())
        query.is_valid(raise_exception=True)
        data = query.validated_data
        start, log_start, log_end, records = remote.read(topic, partition, offset=data.get("offset"),
                                                         group=data.get("group"), max_records=data["max_records"])
        return Response(consume_serializers.read_data(topic, partition, start, log_start, log_end, records))


class Redrive(Operate):
    required_permission = "queueing.add_record"

    @extend_schema(request=shapes.RedriveIn, responses=shapes.RedriveOut)
    @idempotency.idempotent
    def post(self, request, topic):
        given = shapes.RedriveIn(data=request.data)
        given.is_valid(raise_exception=True)
        data = given.validated_data
        plan = replay.plan_replay(topic, to_topic=data.get("to_topic"), to_original=data.get("to_topic") is None,
                                  all_groups=data["all_groups"], partitions=data.get("partitions"), from_offset=data.get("from_offset"),
                                  to_offset=data.get("to_offset"), limit=data.get("limit"))
        result = replay.execute_replay(plan, skip_invalid=data["skip_invalid"]) if data["execute"] else None
        return Response(shapes.RedriveOut({
            "source": topic, "executed": result is not None, "selected": plan.count, "invalid": plan.invalid_count,
            "targets": [{"topic": t.topic, "partition": t.partition, "records": n} for t, n in plan.targets],
            "replayed": result.replayed if result else None, "skipped": result.skipped if result else None,
        }).data)
