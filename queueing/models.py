"""The engine's tables: topics, partitions, the record log, producers and consumer groups."""
from django.contrib.postgres.indexes import BrinIndex
from django.core.validators import MinValueValidator, RegexValidator
from django.db import models

TOPIC_NAME_PATTERN = r"^[a-zA-Z0-9._-]{1,249}$"


class Backoff(models.TextChoices):
    EXPONENTIAL = "exponential", "exponential with jitter"
    LEVELS = "levels", "fixed levels (RocketMQ)"


class RetryPolicy(models.Model):
    """Delivery limit, back-off and dead-letter topic; empty fields inherit (group, then topic, then
    settings.SLUICE)."""

    delivery_limit = models.PositiveIntegerField(null=True, blank=True)
    backoff = models.CharField(max_length=16, choices=Backoff.choices, null=True, blank=True)
    backoff_base_ms = models.PositiveIntegerField(null=True, blank=True)
    backoff_max_ms = models.PositiveIntegerField(null=True, blank=True)
    backoff_levels_ms = models.JSONField(null=True, blank=True, help_text="delays for attempts 1, 2, ...")
    dead_letter_topic = models.CharField(max_length=249, null=True, blank=True)

    class Meta:
        abstract = True


class Topic(RetryPolicy):
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
    """One partition's log bounds. Its row lock is the append lock that keeps offsets dense.

    Every append updates this row, so it carries no constraint that PostgreSQL checks on an update:
    the foreign key's trigger and a CHECK on number each cost a single send about 15 µs, some 8 %
    (bench/README.md). Deleting a topic still deletes its partitions (Django cascades), the unique
    constraint's index serves lookups by topic, and only the engine creates partitions, numbered
    from 0.
    """

    topic = models.ForeignKey(
        Topic, on_delete=models.CASCADE, related_name="partitions", db_constraint=False, db_index=False
    )
    number = models.IntegerField()
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

    The table is partitioned by timestamp into segments (migration 0004, queueing/retention.py), so
    its physical primary key is (topic_id, partition, offset, timestamp); the key declared here is
    the logical one, unique because the append lock hands out each offset once.
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


class ConsumerGroup(RetryPolicy):
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


class ShareGroup(RetryPolicy):
    """A share group (KIP-932): many members consume the same partitions, acknowledging records one by one."""

    name = models.CharField(max_length=249, unique=True)
    lock_duration_ms = models.PositiveIntegerField(default=30_000)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


class ShareGroupMember(models.Model):
    id = models.CharField(primary_key=True, max_length=64)
    group = models.ForeignKey(ShareGroup, on_delete=models.CASCADE, related_name="members")
    client_id = models.CharField(max_length=255, blank=True)
    host = models.CharField(max_length=255, blank=True)
    topics = models.JSONField(default=list)
    joined_at = models.DateTimeField()
    last_heartbeat = models.DateTimeField()


class SharePartition(models.Model):
    """A share group's window on one partition.

    Every record below start_offset is finished (accepted, rejected or dead-lettered); records from
    acquire_offset on were never handed out; in between, a ShareDelivery row per unfinished record.
    Its row lock serialises acquisitions on the partition (each a short statement).
    """

    group = models.ForeignKey(ShareGroup, on_delete=models.CASCADE, related_name="partitions")
    topic = models.ForeignKey(Topic, on_delete=models.CASCADE)
    partition = models.IntegerField()
    start_offset = models.BigIntegerField()
    acquire_offset = models.BigIntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["group", "topic", "partition"], name="share_partition_unique")
        ]


class ShareDelivery(models.Model):
    """Unfinished records [offset, last_offset] of a share partition, acquired (locked until
    lock_until) or available, all with one delivery count.

    A batch acquired together is one row, and one row goes when the whole batch is accepted; a
    range is split into single records only when its records meet different fates.
    """

    class State(models.IntegerChoices):
        ACQUIRED = 1, "acquired"
        AVAILABLE = 2, "available"

    pk = models.CompositePrimaryKey("group_id", "topic_id", "partition", "offset")
    group_id = models.BigIntegerField()
    topic_id = models.BigIntegerField()
    partition = models.IntegerField()
    offset = models.BigIntegerField()
    last_offset = models.BigIntegerField()
    state = models.SmallIntegerField(choices=State.choices)
    delivery_count = models.IntegerField(default=0)
    member_id = models.CharField(max_length=64, null=True)
    lock_until = models.DateTimeField(null=True)
    available_at = models.DateTimeField()


class DeliveryAttempt(models.Model):
    """One failed or finished delivery of a record, kept for the console and for operators."""

    class Outcome(models.TextChoices):
        FAILED = "failed", "failed (will retry)"
        RELEASED = "released", "released"
        REJECTED = "rejected", "rejected"
        EXPIRED = "expired", "lock expired"
        DEAD_LETTERED = "dead_lettered", "dead-lettered"

    group_name = models.CharField(max_length=249)
    topic_name = models.CharField(max_length=249)
    partition = models.IntegerField()
    offset = models.BigIntegerField()
    attempt = models.IntegerField()
    member_id = models.CharField(max_length=64, blank=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    error = models.TextField(blank=True)
    traceback = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["group_name", "topic_name", "partition", "offset"], name="attempt_record"),
            models.Index(fields=["created_at"], name="attempt_created"),
        ]


class DeliveryAttemptCount(models.Model):
    """Delivery attempts of a group by outcome, ever: kept by a trigger on DeliveryAttempt
    (migration 0006), so /metrics reads one row per (group, outcome), never the attempts."""

    group_name = models.CharField(max_length=249)
    outcome = models.CharField(max_length=16, choices=DeliveryAttempt.Outcome.choices)
    count = models.BigIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["group_name", "outcome"], name="attempt_count_unique")]


class DelayedRecord(models.Model):
    """A record waiting for its time; it is appended to the log when due, so offset order stays
    visibility order."""

    topic = models.ForeignKey(Topic, on_delete=models.CASCADE)
    partition = models.IntegerField(null=True, help_text="empty: chosen by key when due")
    key = models.BinaryField(null=True)
    key_hash = models.IntegerField(null=True, help_text="Kafka's murmur2 of the key, when the key picks the partition")
    value = models.BinaryField(null=True)
    value_format = models.SmallIntegerField(default=0)
    headers = models.JSONField(null=True)
    deliver_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["deliver_at", "id"], name="delayed_due")]
