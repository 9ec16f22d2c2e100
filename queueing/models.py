"""The engine's tables: topics, partitions, the record log, producers and consumer groups."""
from django.conf import settings
from django.contrib.postgres.indexes import BrinIndex
from django.core.validators import MinValueValidator, RegexValidator
from django.db import models

TOPIC_NAME_PATTERN = r"^[a-zA-Z0-9._-]{1,249}$"


class Topic(models.Model):
    class CleanupPolicy(models.TextChoices):
        DELETE = "delete", "delete"
        COMPACT = "compact", "compact"

    name = models.CharField(max_length=249, unique=True, validators=[RegexValidator(TOPIC_NAME_PATTERN)])
    partition_count = models.PositiveIntegerField(validators=[MinValueValidator(1)])
    retention_ms = models.BigIntegerField(null=True, blank=True, help_text="Keep records this long; empty: forever")
    retention_bytes = models.BigIntegerField(null=True, blank=True, help_text="Per partition; empty: no limit")
    max_message_bytes = models.PositiveIntegerField()
    cleanup_policy = models.CharField(max_length=16, choices=CleanupPolicy.choices, default=CleanupPolicy.DELETE)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(condition=models.Q(partition_count__gte=1), name="topic_has_partitions"),
            models.CheckConstraint(condition=models.Q(name__regex=TOPIC_NAME_PATTERN), name="topic_name_valid"),
        ]

    def __str__(self):
        return self.name


class Partition(models.Model):
    """One partition's log bounds. Its row lock is the append lock that keeps offsets dense."""

    topic = models.ForeignKey(Topic, on_delete=models.CASCADE, related_name="partitions")
    number = models.PositiveIntegerField()
    log_start_offset = models.BigIntegerField(default=0)
    next_offset = models.BigIntegerField(default=0, help_text="The log end offset")
    size_bytes = models.BigIntegerField(default=0)

    class Meta:
        ordering = ["topic", "number"]
        constraints = [models.UniqueConstraint(fields=["topic", "number"], name="partition_unique_number")]

    def __str__(self):
        return f"{self.topic_id}-{self.number}"


class Record(models.Model):
    """A record in a partition's log.

    topic_id is a plain column, not a foreign key: a per-row foreign-key check would cost every
    append, and topic deletion removes records itself.
    """

    pk = models.CompositePrimaryKey("topic_id", "partition", "offset")
    topic_id = models.BigIntegerField()
    partition = models.IntegerField()
    offset = models.BigIntegerField()
    key = models.BinaryField(null=True)
    value = models.BinaryField(null=True)
    value_format = models.SmallIntegerField(default=0)
    headers = models.JSONField(null=True)
    timestamp = models.DateTimeField()
    producer_id = models.BigIntegerField(null=True)
    sequence = models.IntegerField(null=True)

    class Meta:
        indexes = [BrinIndex(fields=["timestamp"], name="record_timestamp_brin")]


class Producer(models.Model):
    """A registered idempotent producer; its id numbers its sends."""

    client_id = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)


class ProducerState(models.Model):
    """The last batch an idempotent producer stored on a partition, to recognise a retried send."""

    producer_id = models.BigIntegerField()
    topic_id = models.BigIntegerField()
    partition = models.IntegerField()
    last_base_sequence = models.IntegerField()
    last_sequence = models.IntegerField()
    last_base_offset = models.BigIntegerField()
    updated_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["producer_id", "topic_id", "partition"], name="producer_state_unique")
        ]


class ConsumerGroup(models.Model):
    name = models.CharField(max_length=249, unique=True)
    generation = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    rebalanced_at = models.DateTimeField(null=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


class GroupMember(models.Model):
    id = models.CharField(primary_key=True, max_length=64)
    group = models.ForeignKey(ConsumerGroup, on_delete=models.CASCADE, related_name="members")
    client_id = models.CharField(max_length=255, blank=True)
    host = models.CharField(max_length=255, blank=True)
    topics = models.JSONField(default=list)
    session_timeout_ms = models.IntegerField()
    joined_at = models.DateTimeField()
    last_heartbeat = models.DateTimeField()

    class Meta:
        ordering = ["group", "id"]


class GroupAssignment(models.Model):
    """Which member owns a partition in the group's current generation."""

    group = models.ForeignKey(ConsumerGroup, on_delete=models.CASCADE, related_name="assignments")
    topic = models.ForeignKey(Topic, on_delete=models.CASCADE)
    partition = models.IntegerField()
    member = models.ForeignKey(GroupMember, on_delete=models.CASCADE)
    generation = models.BigIntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["group", "topic", "partition"], name="assignment_one_owner")
        ]


class CommittedOffset(models.Model):
    group = models.ForeignKey(ConsumerGroup, on_delete=models.CASCADE, related_name="offsets")
    topic = models.ForeignKey(Topic, on_delete=models.CASCADE)
    partition = models.IntegerField()
    offset = models.BigIntegerField()
    committed_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["group", "topic", "partition"], name="committed_offset_unique")
        ]


class OffsetReset(models.Model):
    """An audit row for every executed offset reset: who, when, before and after."""

    group_name = models.CharField(max_length=249)
    topic_name = models.CharField(max_length=249)
    partition = models.IntegerField()
    before = models.BigIntegerField(null=True)
    after = models.BigIntegerField()
    scenario = models.CharField(max_length=255)
    actor = models.CharField(max_length=255)
    generation_fenced = models.BigIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "id"]
