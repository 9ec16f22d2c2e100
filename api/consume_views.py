"""Thin REST views for consuming over HTTP: a share-group member that acquires and acknowledges."""
import uuid

from drf_spectacular.utils import extend_schema
from rest_framework import exceptions
from rest_framework.response import Response

from api import consume_serializers as shapes
from api import idempotency, permissions
from api.views import Base
from queueing import remote


def _member_prefix(request):
    """Member ids are the credential's own: another credential cannot acknowledge its records."""
    if permissions.by_key(request):
        return f"http-k{request.auth.pk}-"
    return f"http-u{request.user.pk}-"


def _member(request, given):
    prefix = _member_prefix(request)
    if given is None:
        return prefix + uuid.uuid4().hex[:16]
    if not given.startswith(prefix):
        raise exceptions.PermissionDenied(f"member {given!r} is not one of this credential's")
    return given


class ShareAcquire(Base):
    required_permission = "queueing.view_record"
    required_scope = "consume"

    @extend_schema(request=shapes.AcquireIn, responses=shapes.AcquireOut)
    @idempotency.idempotent
    def post(self, request, group):
        given = shapes.AcquireIn(data=request.data)
        given.is_valid(raise_exception=True)
        data = given.validated_data
        if data["wait_ms"] and idempotency.HEADER in request.headers:
            # The request's transaction would hold the partitions' acquisition locks through the wait.
            raise exceptions.ValidationError({"wait_ms": ["a wait cannot be combined with an Idempotency-Key"]})
        for topic in data["topics"]:
            permissions.require(request, "consume", topic)
        member_id = _member(request, data.get("member_id"))
        records = remote.acquire(group, data["topics"], member_id=member_id, max_records=data["max_records"],
                                 lock_ms=data.get("lock_ms"), wait_s=data["wait_ms"] / 1000,
                                 auto_offset_reset=data["auto_offset_reset"])
        return Response(shapes.AcquireOut({"member_id": member_id,
                                           "records": [shapes.record_data(r) for r in records]}).data)


class ShareAcknowledge(Base):
    required_permission = "queueing.view_record"
    required_scope = "consume"

    @extend_schema(request=shapes.AcknowledgeIn, responses=shapes.AcknowledgeOut)
    @idempotency.idempotent
    def post(self, request, group):
        given = shapes.AcknowledgeIn(data=request.data)
        given.is_valid(raise_exception=True)
        data = given.validated_data
        for topic in sorted({ack["topic"] for ack in data["acks"]}):
            permissions.require(request, "consume", topic)
        member_id = _member(request, data["member_id"])
        acks = [(a["topic"], a["partition"], a["offset"], a["delivery_count"], a["type"], a["delay_ms"] / 1000,
                 a["reason"]) for a in data["acks"]]
        done = remote.acknowledge(group, member_id=member_id, acks=acks)
        return Response({"results": [
            {"topic": a["topic"], "partition": a["partition"], "offset": a["offset"], "type": a["type"],
             "acknowledged": ok} for a, ok in zip(data["acks"], done)]})


class PartitionRecords(Base):
    required_permission = "queueing.view_record"
    required_scope = "consume"

    @extend_schema(parameters=[shapes.ReadQuery], responses=shapes.ReadOut)
    def get(self, request, name, partition):
        permissions.require(request, "consume", name)
        query = shapes.ReadQuery(data=request.query_params.dict())
        query.is_valid(raise_exception=True)
        data = query.validated_data
        start, log_start, log_end, records = remote.read(name, partition, offset=data.get("offset"),
                                                         group=data.get("group"), max_records=data["max_records"])
        return Response(shapes.read_data(name, partition, start, log_start, log_end, records))


class GroupOffsets(Base):
    required_permission = "queueing.change_consumergroup"
    required_scope = "consume"

    @extend_schema(request=shapes.CommitIn, responses=shapes.CommitOut)
    @idempotency.idempotent
    def post(self, request, group):
        given = shapes.CommitIn(data=request.data)
        given.is_valid(raise_exception=True)
        data = given.validated_data
        permissions.require(request, "consume", data["topic"])
        stored = remote.commit(group, data["topic"], data["partition"], data["offset"])
        return Response({"group": group, "topic": data["topic"], "partition": data["partition"], "offset": stored})
