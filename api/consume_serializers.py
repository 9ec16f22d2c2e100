"""Input and output shapes of consuming over HTTP: share-group acquisitions and acknowledgements."""
import base64

from rest_framework import serializers

from api import fields
from queueing import remote, types


class AcquireIn(fields.Strict):
    topics = serializers.ListField(child=fields.Text(max_length=249), min_length=1, max_length=50)
    max_records = fields.Integer(required=False, default=100, min_value=1, max_value=remote.MAX_RECORDS)
    lock_ms = fields.Integer(required=False, min_value=1000, max_value=remote.MAX_LOCK_MS,
                             help_text="how long the records stay locked to this member (default: the group's)")
    wait_ms = fields.Integer(required=False, default=0, min_value=0, max_value=int(remote.MAX_WAIT_S * 1000),
                             help_text="wait this long for records when none is available")
    auto_offset_reset = fields.Choice(choices=types.OffsetReset.values, default=types.OffsetReset.LATEST,
                                      help_text="where a group new to a partition starts")
    member_id = fields.Text(required=False, max_length=64, help_text="acquire again as this member")


class RecordOut(serializers.Serializer):
    topic = serializers.CharField()
    partition = serializers.IntegerField()
    offset = serializers.IntegerField()
    delivery_count = serializers.IntegerField(help_text="1 for the first delivery; send it back with the ack")
    key = serializers.CharField(allow_null=True)
    value = serializers.JSONField(allow_null=True, help_text="JSON, or base64 text when value_encoding is base64")
    value_encoding = serializers.ChoiceField(choices=["json", "base64"])
    headers = serializers.DictField(child=serializers.CharField())
    timestamp = serializers.DateTimeField()


class AcquireOut(serializers.Serializer):
    member_id = serializers.CharField(help_text="send it with the acknowledgements")
    records = RecordOut(many=True)


class AckIn(fields.Strict):
    topic = fields.Text(max_length=249)
    partition = fields.Integer(min_value=0)
    offset = fields.Integer(min_value=0)
    delivery_count = fields.Integer(min_value=1)
    type = fields.Choice(choices=[remote.ACCEPT, remote.RELEASE, remote.REJECT])
    delay_ms = fields.Integer(required=False, default=0, min_value=0, max_value=86_400_000,
                              help_text="release: deliver again after this long")
    reason = fields.Text(required=False, default="", allow_blank=True, max_length=2000,
                         help_text="reject: why (kept with the dead letter)")


class AcknowledgeIn(fields.Strict):
    member_id = fields.Text(max_length=64)
    acks = AckIn(many=True, allow_empty=False, max_length=remote.MAX_RECORDS)


class AckOut(serializers.Serializer):
    topic = serializers.CharField()
    partition = serializers.IntegerField()
    offset = serializers.IntegerField()
    type = serializers.CharField()
    acknowledged = serializers.BooleanField(help_text="false: the lock had lapsed, the record is delivered again")


class AcknowledgeOut(serializers.Serializer):
    results = AckOut(many=True)


def record_data(record):
    """A record as JSON: its value parsed when it is JSON, base64 text otherwise."""
    as_json = record.value is not None and record.value_format == types.ValueFormat.JSON
    value = record.data if as_json else (None if record.value is None else base64.b64encode(record.value).decode())
    return {"topic": record.topic, "partition": record.partition, "offset": record.offset,
            "delivery_count": record.delivery_count, "key": record.key_text, "value": value,
            "value_encoding": "json" if as_json or record.value is None else "base64",
            "headers": record.headers or {}, "timestamp": record.timestamp}


class ReadQuery(fields.Strict):
    """Where to read from: offset, else the group's committed offset, else the log's start."""

    offset = serializers.IntegerField(required=False, min_value=0)
    group = fields.Text(required=False, max_length=249)
    max_records = serializers.IntegerField(required=False, default=100, min_value=1, max_value=remote.MAX_RECORDS)


class ReadOut(serializers.Serializer):
    topic = serializers.CharField()
    partition = serializers.IntegerField()
    from_offset = serializers.IntegerField(help_text="where this read started")
    next_offset = serializers.IntegerField(help_text="where the next read starts; commit it when these are done")
    log_start_offset = serializers.IntegerField()
    log_end_offset = serializers.IntegerField()
    records = RecordOut(many=True)


class CommitIn(fields.Strict):
    topic = fields.Text(max_length=249)
    partition = fields.Integer(min_value=0)
    offset = fields.Integer(min_value=0, help_text="the next offset to read (the last one processed + 1)")


class CommitOut(serializers.Serializer):
    group = serializers.CharField()
    topic = serializers.CharField()
    partition = serializers.IntegerField()
    offset = serializers.IntegerField()


def read_data(topic, partition, start, log_start, log_end, records):
    """A ReadOut of remote.read's answer."""
    return ReadOut({"topic": topic, "partition": partition, "from_offset": start,
                    "next_offset": records[-1].offset + 1 if records else start,
                    "log_start_offset": log_start, "log_end_offset": log_end,
                    "records": [record_data(r) for r in records]}).data
