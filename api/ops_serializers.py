"""Input and output shapes of the operations endpoints: groups and lag, offset resets, dead letters,
topics."""
from rest_framework import serializers

from api import fields
from queueing import exceptions, models, offsets

SCENARIOS = ["to_earliest", "to_latest", "to_current", "to_offset", "shift_by", "to_datetime", "by_duration"]
NEEDS_VALUE = {"to_offset": "an integer offset", "shift_by": "an integer shift",
               "to_datetime": "an ISO-8601 date and time with its zone", "by_duration": "an ISO-8601 duration"}


class GroupOut(serializers.Serializer):
    name = serializers.CharField()
    generation = serializers.IntegerField()
    members = serializers.IntegerField()
    state = serializers.CharField()


class GroupPartitionOut(serializers.Serializer):
    topic = serializers.CharField()
    partition = serializers.IntegerField()
    current_offset = serializers.IntegerField(allow_null=True)
    log_end_offset = serializers.IntegerField()
    lag = serializers.IntegerField(allow_null=True)
    member_id = serializers.CharField(allow_null=True)


class GroupDetailOut(serializers.Serializer):
    name = serializers.CharField()
    partitions = GroupPartitionOut(many=True)


class SharePartitionOut(serializers.Serializer):
    topic = serializers.CharField()
    partition = serializers.IntegerField()
    start_offset = serializers.IntegerField()
    acquire_offset = serializers.IntegerField()
    log_end_offset = serializers.IntegerField()
    lag = serializers.IntegerField()
    acquired = serializers.IntegerField()
    available = serializers.IntegerField()
    max_delivery_count = serializers.IntegerField()
    dead_lettered = serializers.IntegerField()


class ShareGroupDetailOut(serializers.Serializer):
    name = serializers.CharField()
    partitions = SharePartitionOut(many=True)


class ResetIn(fields.Strict):
    """An offset reset, as manage.py reset_offsets takes it; a dry run unless execute is true."""

    topics = serializers.ListField(child=fields.Text(max_length=300), required=False, max_length=100,
                                   help_text="TOPIC or TOPIC:P,P,...")
    all_topics = fields.Boolean(required=False, default=False)
    scenario = fields.Choice(choices=SCENARIOS)
    value = serializers.JSONField(required=False, help_text="; ".join(f"{k}: {v}" for k, v in NEEDS_VALUE.items()))
    execute = fields.Boolean(required=False, default=False, help_text="false (the default): plan only")

    def validate(self, data):
        scenario, value = data["scenario"], data.get("value")
        if bool(data.get("topics")) == data["all_topics"]:
            raise serializers.ValidationError({"topics": ["give topics or all_topics: true, not both"]})
        if scenario not in NEEDS_VALUE:
            if "value" in data:
                raise serializers.ValidationError({"value": [f"{scenario} takes no value"]})
            return data
        kind = NEEDS_VALUE[scenario]
        try:
            if scenario in ("to_offset", "shift_by"):
                if isinstance(value, bool) or not isinstance(value, int):
                    raise serializers.ValidationError({"value": [f"{scenario} needs {kind}"]})
            elif not isinstance(value, str):
                raise serializers.ValidationError({"value": [f"{scenario} needs {kind}"]})
            elif scenario == "to_datetime":
                data["value"] = offsets.parse_datetime(value)
            else:
                data["value"] = offsets.parse_duration(value)
        except exceptions.InvalidArgument as error:
            raise serializers.ValidationError({"value": [error.data["reason"]]}) from None
        return data


class PlanRowOut(serializers.Serializer):
    topic = serializers.CharField()
    partition = serializers.IntegerField()
    current_offset = serializers.IntegerField(allow_null=True)
    new_offset = serializers.IntegerField()
    log_start_offset = serializers.IntegerField()
    log_end_offset = serializers.IntegerField()


class ResetOut(serializers.Serializer):
    group = serializers.CharField()
    executed = serializers.BooleanField()
    generation_fenced = serializers.IntegerField(allow_null=True)
    plan = PlanRowOut(many=True)


class RedriveIn(fields.Strict):
    """Dead letters to send again: by default each back to the topic it came from."""

    to_topic = fields.Text(required=False, max_length=249, help_text="default: each record's original topic")
    all_groups = fields.Boolean(required=False, default=False,
                                help_text="back to the original topic for every group reading it; default: only "
                                          "for the group that failed each dead letter")
    partitions = serializers.ListField(child=fields.Integer(min_value=0), required=False, max_length=1000)
    from_offset = fields.Integer(required=False, min_value=0)
    to_offset = fields.Integer(required=False, min_value=0, help_text="exclusive")
    limit = fields.Integer(required=False, min_value=1, max_value=1_000_000)
    skip_invalid = fields.Boolean(required=False, default=False)
    execute = fields.Boolean(required=False, default=False, help_text="false (the default): plan only")


class TargetOut(serializers.Serializer):
    topic = serializers.CharField()
    partition = serializers.IntegerField()
    records = serializers.IntegerField()


class RedriveOut(serializers.Serializer):
    source = serializers.CharField()
    executed = serializers.BooleanField()
    selected = serializers.IntegerField()
    invalid = serializers.IntegerField(help_text="records that cannot be sent again (no original topic, say)")
    targets = TargetOut(many=True)
    replayed = serializers.IntegerField(allow_null=True)
    skipped = serializers.IntegerField(allow_null=True)


class TopicIn(fields.Strict):
    name = fields.Text(max_length=249)
    partitions = fields.Integer(required=False, min_value=1, max_value=10_000)
    retention_ms = fields.Integer(required=False, min_value=1)
    retention_bytes = fields.Integer(required=False, min_value=1)
    max_message_bytes = fields.Integer(required=False, min_value=1, max_value=64 * 1024 * 1024)
    cleanup_policy = fields.Choice(choices=models.Topic.CleanupPolicy.values, required=False)


class TopicChangeIn(TopicIn):
    name = None
