"""Thin REST views over the engine's services: topics, records, half messages."""
from django.db import transaction
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from api import idempotency, ops_serializers, permissions, serializers
from api.permissions import HasPermission
from outbox import half
from queueing import producer, topics


class Base(APIView):
    permission_classes = [HasPermission]


def who(request):
    """The caller, for audit trails: the user's name, and the API key's prefix when one was used."""
    name = request.user.get_username()
    return f"{name} (key {request.auth.prefix})" if permissions.by_key(request) else name


TOPIC_SCOPES = ("produce", "consume", "operate")


class TopicList(Base):
    required_permission = "queueing.view_topic"
    required_scope = TOPIC_SCOPES
    required_by_method = {"POST": ("queueing.add_topic", "operate")}

    @extend_schema(responses=serializers.TopicOut(many=True))
    def get(self, request):
        seen = [info for info in topics.list_topics() if permissions.sees_topic(request, info.name)]
        return Response(serializers.TopicOut(seen, many=True).data)

    @extend_schema(request=ops_serializers.TopicIn, responses={201: serializers.TopicOut})
    @idempotency.idempotent
    def post(self, request):
        given = ops_serializers.TopicIn(data=request.data)
        given.is_valid(raise_exception=True)
        data = dict(given.validated_data)
        info = topics.create_topic(data.pop("name"), **data)
        return Response(serializers.TopicOut(info).data, status=status.HTTP_201_CREATED)


class TopicDetail(Base):
    required_permission = "queueing.view_topic"
    required_scope = TOPIC_SCOPES
    required_by_method = {"PATCH": ("queueing.change_topic", "operate")}

    @extend_schema(responses=serializers.TopicOut)
    def get(self, request, name):
        if not permissions.sees_topic(request, name):
            permissions.require(request, "consume", name)
        info, partitions = topics.describe_topic(name)
        data = serializers.TopicOut(info).data
        data["partitions"] = serializers.PartitionOut(partitions, many=True).data
        return Response(data)

    @extend_schema(request=ops_serializers.TopicChangeIn, responses=serializers.TopicOut)
    def patch(self, request, name):
        given = ops_serializers.TopicChangeIn(data=request.data)
        given.is_valid(raise_exception=True)
        topics.alter_topic(name, **given.validated_data)
        return self.get(request, name)


class Records(Base):
    required_permission = "queueing.add_record"
    required_scope = "produce"

    @extend_schema(request=serializers.RecordsIn, responses={201: serializers.SentOut(many=True)})
    @idempotency.idempotent
    def post(self, request, name):
        permissions.require(request, "produce", name)
        given = serializers.RecordsIn(data=request.data)
        given.is_valid(raise_exception=True)
        data = given.validated_data
        sent = []
        with transaction.atomic():  # all the records or none
            for record in data["records"]:
                sent.append(producer.send(name, record["value"], key=record.get("key"),
                                          headers=record.get("headers"), partition=data.get("partition")))
        return Response(serializers.SentOut(sent, many=True).data, status=status.HTTP_201_CREATED)


def _half_message(request, message_id):
    """The half message, if the caller may produce to its topic (403 otherwise)."""
    message = half.status(message_id)
    permissions.require(request, "produce", message.topic)
    return message


class HalfMessages(Base):
    required_permission = "outbox.add_halfmessage"
    required_scope = "produce"

    @extend_schema(request=serializers.HalfMessageIn, responses={201: serializers.HalfMessageOut})
    @idempotency.idempotent
    def post(self, request):
        given = serializers.HalfMessageIn(data=request.data)
        given.is_valid(raise_exception=True)
        data = given.validated_data
        permissions.require(request, "produce", data["topic"])
        message = half.prepare(
            data["topic"], data["value"], key=data.get("key"), headers=data.get("headers"),
            producer_group=data["producer_group"], checker=data.get("checker"), callback_url=data.get("callback_url"),
            check_interval_ms=data["check_interval_ms"], max_checks=data["max_checks"],
            unresolved_policy=data["unresolved_policy"], created_by=who(request),
        )
        return Response(serializers.HalfMessageOut(half.status(message.id)).data, status=status.HTTP_201_CREATED)


class HalfMessageDetail(Base):
    required_permission = "outbox.view_halfmessage"
    required_scope = "produce"

    @extend_schema(responses=serializers.HalfMessageOut)
    def get(self, request, message_id):
        return Response(serializers.HalfMessageOut(_half_message(request, message_id)).data)


class HalfMessageCommit(Base):
    required_permission = "outbox.change_halfmessage"
    required_scope = "produce"

    @extend_schema(request=None, responses=serializers.HalfMessageOut)
    @idempotency.idempotent
    def post(self, request, message_id):
        _half_message(request, message_id)
        half.commit(message_id, reason=f"committed over the API by {who(request)}")
        return Response(serializers.HalfMessageOut(half.status(message_id)).data)


class HalfMessageRollback(Base):
    required_permission = "outbox.change_halfmessage"
    required_scope = "produce"

    @extend_schema(request=None, responses=serializers.HalfMessageOut)
    @idempotency.idempotent
    def post(self, request, message_id):
        _half_message(request, message_id)
        half.rollback(message_id, reason=f"rolled back over the API by {who(request)}")
        return Response(serializers.HalfMessageOut(half.status(message_id)).data)
