"""Input and output shapes of the REST API."""
import base64
import binascii

from rest_framework import serializers

from api import fields

MAX_VALUE_BYTES = 1024 * 1024


class RecordIn(fields.Strict):
    value = serializers.JSONField(help_text="a JSON value, or base64 text with value_encoding=base64")
    value_encoding = fields.Choice(choices=["json", "base64"], default="json")
    key = fields.Text(required=False, allow_null=True, max_length=4096)
    headers = fields.Object(child=fields.Text(max_length=4096, allow_blank=True), required=False)

    def validate(self, data):
        if data["value_encoding"] == "base64":
            if not isinstance(data["value"], str):
                raise serializers.ValidationError({"value": "base64 text expected"})
            try:
                data["value"] = base64.b64decode(data["value"], validate=True)
            except (binascii.Error, ValueError):
                raise serializers.ValidationError({"value": "not valid base64"}) from None
            if len(data["value"]) > MAX_VALUE_BYTES:
                raise serializers.ValidationError({"value": f"larger than {MAX_VALUE_BYTES} bytes"})
        return data


class RecordsIn(fields.Strict):
    records = RecordIn(many=True, allow_empty=False, max_length=1000)
    partition = fields.Integer(required=False, min_value=0)


MAX_REDRIVE = 10_000


class RedriveIn(serializers.Serializer):
    all_groups = serializers.BooleanField(default=False, help_text="for every group reading the original topic, "
                                          "not only the group that failed each dead letter")
    offsets = serializers.ListField(child=serializers.RegexField(r"^\d{1,9}:\d{1,18}$"), required=False,
                                    max_length=1000, help_text="single dead letters, PARTITION:OFFSET; default all")
    limit = serializers.IntegerField(required=False, min_value=1, max_value=MAX_REDRIVE)
    skip_invalid = serializers.BooleanField(default=False)
    dry_run = serializers.BooleanField(default=False)


class RedriveTargetOut(serializers.Serializer):
    topic = serializers.CharField()
    partition = serializers.IntegerField()
    records = serializers.IntegerField()


class RedriveProblemOut(serializers.Serializer):
    partition = serializers.IntegerField()
    offset = serializers.IntegerField()
    problem = serializers.CharField()


class RedriveOut(serializers.Serializer):
    selected = serializers.IntegerField()
    targets = RedriveTargetOut(many=True)
    invalid = RedriveProblemOut(many=True)
    replayed = serializers.IntegerField(allow_null=True, help_text="null on a dry run")
    skipped = serializers.IntegerField(allow_null=True)


class HalfMessageIn(RecordIn):
    topic = fields.Text(max_length=249)
    producer_group = fields.Text(max_length=249)
    callback_url = fields.URL(required=False, max_length=2048,
                              help_text="checked back by POST; its host must be in SLUICE_API's CALLBACK_ALLOW")
    checker = fields.Text(required=False, max_length=255, help_text="a checker registered with @half.checker")
    check_interval_ms = fields.Integer(required=False, min_value=100, max_value=86_400_000, default=60_000)
    max_checks = fields.Integer(required=False, min_value=1, max_value=1000, default=15)
    unresolved_policy = fields.Choice(choices=["rollback", "commit"], default="rollback")


class CheckOut(serializers.Serializer):
    number = serializers.IntegerField()
    result = serializers.CharField()
    detail = serializers.CharField()
    checked_at = serializers.DateTimeField()


class HalfMessageOut(serializers.Serializer):
    id = serializers.UUIDField()
    topic = serializers.CharField()
    producer_group = serializers.CharField()
    state = serializers.CharField()
    check_count = serializers.IntegerField()
    max_checks = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    resolved_at = serializers.DateTimeField()
    resolution = serializers.CharField()
    partition = serializers.IntegerField(allow_null=True)
    offset = serializers.IntegerField(allow_null=True)
    checks = CheckOut(many=True, source="checks.all")


class PartitionOut(serializers.Serializer):
    partition = serializers.IntegerField()
    log_start_offset = serializers.IntegerField()
    log_end_offset = serializers.IntegerField()
    size_bytes = serializers.IntegerField()


class TopicOut(serializers.Serializer):
    name = serializers.CharField()
    partition_count = serializers.IntegerField()
    retention_ms = serializers.IntegerField(allow_null=True)
    retention_bytes = serializers.IntegerField(allow_null=True)
    max_message_bytes = serializers.IntegerField()


class SentOut(serializers.Serializer):
    topic = serializers.CharField()
    partition = serializers.IntegerField()
    offset = serializers.IntegerField()
