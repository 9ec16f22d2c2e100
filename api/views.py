"""Thin REST views over the engine's services: topics, records, redrives, half messages."""
from django.db import transaction
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from api import serializers
from api.permissions import HasPermission
from outbox import half
from queueing import exceptions, producer, replay, topics


class Base(APIView):
    permission_classes = [HasPermission]


class TopicList(Base):
    required_permission = "queueing.view_topic"

    @extend_schema(responses=serializers.TopicOut(many=True))
    def get(self, request):
        return Response(serializers.TopicOut(topics.list_topics(), many=True).data)


class TopicDetail(Base):
    required_permission = "queueing.view_topic"

    @extend_schema(responses=serializers.TopicOut)
    def get(self, request, name):
        info, partitions = topics.describe_topic(name)
        data = serializers.TopicOut(info).data
        data["partitions"] = serializers.PartitionOut(partitions, many=True).data
        return Response(data)


class Records(Base):
    required_permission = "queueing.add_record"

    @extend_schema(request=serializers.RecordsIn, responses={201: serializers.SentOut(many=True)})
    def post(self, request, name):
        given = serializers.RecordsIn(data=request.data)
        given.is_valid(raise_exception=True)
        data = given.validated_data
        sent = []
        with transaction.atomic():  # all the records or none
            for record in data["records"]:
                sent.append(producer.send(name, record["value"], key=record.get("key"),
                                          headers=record.get("headers"), partition=data.get("partition")))
        return Response(serializers.SentOut(sent, many=True).data, status=status.HTTP_201_CREATED)


class Redrive(Base):
    """Send the dead letters of a dead-letter topic back to their original topics, each for the
    group that failed it only (all_groups: for every group), as `replay --to-original` does."""

    required_permission = "queueing.add_record"

    @extend_schema(request=serializers.RedriveIn, responses={200: serializers.RedriveOut, 201: serializers.RedriveOut})
    def post(self, request, name):
        given = serializers.RedriveIn(data=request.data)
        given.is_valid(raise_exception=True)
        data = given.validated_data
        offsets = [replay.parse_offset_spec(text) for text in data.get("offsets") or ()] or None
        cap = serializers.MAX_REDRIVE
        # One more than the cap is read, so a larger selection is refused before anything is sent.
        plan = replay.plan_replay(name, to_original=True, all_groups=data["all_groups"], offsets=offsets,
                                  limit=data.get("limit") or cap + 1)
        if plan.count > cap:
            raise exceptions.InvalidArgument(
                reason=f"more than {cap} dead letters selected: give a limit, or use `manage.py replay`")
        out = {"selected": plan.count, "replayed": None, "skipped": None,
               "targets": [{"topic": t.topic, "partition": t.partition, "records": n} for t, n in plan.targets],
               "invalid": [{"partition": r.partition, "offset": r.offset, "problem": r.problem} for r in plan.invalid]}
        if data["dry_run"]:
            return Response(serializers.RedriveOut(out).data)
        result = replay.execute_replay(plan, skip_invalid=data["skip_invalid"])
        out.update(replayed=result.replayed, skipped=result.skipped)
        return Response(serializers.RedriveOut(out).data, status=status.HTTP_201_CREATED)


class HalfMessages(Base):
    required_permission = "outbox.add_halfmessage"

    @extend_schema(request=serializers.HalfMessageIn, responses={201: serializers.HalfMessageOut})
    def post(self, request):
        given = serializers.HalfMessageIn(data=request.data)
        given.is_valid(raise_exception=True)
        data = given.validated_data
        message = half.prepare(
            data["topic"], data["value"], key=data.get("key"), headers=data.get("headers"),
            producer_group=data["producer_group"], checker=data.get("checker"), callback_url=data.get("callback_url"),
            check_interval_ms=data["check_interval_ms"], max_checks=data["max_checks"],
            unresolved_policy=data["unresolved_policy"], created_by=request.user.get_username(),
        )
        return Response(serializers.HalfMessageOut(half.status(message.id)).data, status=status.HTTP_201_CREATED)


class HalfMessageDetail(Base):
    required_permission = "outbox.view_halfmessage"

    @extend_schema(responses=serializers.HalfMessageOut)
    def get(self, request, message_id):
        return Response(serializers.HalfMessageOut(half.status(message_id)).data)


class HalfMessageCommit(Base):
    required_permission = "outbox.change_halfmessage"

    @extend_schema(request=None, responses=serializers.HalfMessageOut)
    def post(self, request, message_id):
        half.commit(message_id, reason=f"committed over the API by {request.user.get_username()}")
        return Response(serializers.HalfMessageOut(half.status(message_id)).data)


class HalfMessageRollback(Base):
    required_permission = "outbox.change_halfmessage"

    @extend_schema(request=None, responses=serializers.HalfMessageOut)
    def post(self, request, message_id):
        half.rollback(message_id, reason=f"rolled back over the API by {request.user.get_username()}")
        return Response(serializers.HalfMessageOut(half.status(message_id)).data)
