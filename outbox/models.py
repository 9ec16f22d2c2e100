"""Tables of transactional messaging: outbox events, half messages and their checks, the inbox."""
import uuid

from django.db import models


class OutboxEvent(models.Model):
    """An event written in the caller's transaction, delivered by the relay after it committed.

    seq orders events; the relay delivers them in seq order per (aggregate_type, aggregate_id).
    """

    seq = models.BigAutoField(primary_key=True)
    id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    aggregate_type = models.CharField(max_length=255)
    aggregate_id = models.CharField(max_length=255)
    event_type = models.CharField(max_length=255)
    payload = models.JSONField()
    headers = models.JSONField(default=dict)
    destination = models.CharField(max_length=512, help_text="where the relay delivers it; see outbox docs")
    key = models.CharField(max_length=255, blank=True, help_text="default: the aggregate id")
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    attempts = models.IntegerField(default=0)
    last_error = models.TextField(blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["aggregate_type", "aggregate_id", "seq"], name="outbox_aggregate_seq"),
            models.Index(
                fields=["seq"], name="outbox_undelivered", condition=models.Q(delivered_at__isnull=True)
            ),
            models.Index(fields=["delivered_at"], name="outbox_delivered_at"),
            # The relay's "no earlier undelivered event of this aggregate" probe: undelivered rows
            # only, so an aggregate's delivered history (until it is pruned) is never walked.
            models.Index(
                fields=["aggregate_type", "aggregate_id", "seq"], name="outbox_pending_aggregate",
                condition=models.Q(delivered_at__isnull=True),
            ),
        ]


class HalfMessage(models.Model):
    """A RocketMQ half message: stored, invisible, until its producer commits or rolls it back."""

    class State(models.TextChoices):
        PREPARED = "prepared", "prepared"
        COMMITTED = "committed", "committed"
        ROLLED_BACK = "rolled_back", "rolled back"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    producer_group = models.CharField(max_length=249)
    topic = models.CharField(max_length=249)
    key = models.BinaryField(null=True)
    value = models.BinaryField(null=True)
    value_format = models.SmallIntegerField(default=0)
    headers = models.JSONField(null=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.PREPARED)
    checker = models.CharField(max_length=255, blank=True, help_text="registered Python checker name")
    callback_url = models.URLField(max_length=2048, blank=True, help_text="HTTP check-back for other languages")
    check_interval_ms = models.IntegerField(default=60_000)
    max_checks = models.IntegerField(default=15)
    unresolved_policy = models.CharField(max_length=16, default="rollback", help_text="after max_checks")
    check_count = models.IntegerField(default=0)
    next_check_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolution = models.CharField(max_length=255, blank=True, help_text="who or what resolved it, and why")
    partition = models.IntegerField(null=True, blank=True)
    offset = models.BigIntegerField(null=True, blank=True)
    created_by = models.CharField(max_length=255, blank=True)

    class Meta:
        indexes = [
            models.Index(
                fields=["next_check_at"], name="half_message_due", condition=models.Q(state="prepared")
            ),
        ]


class HalfMessageCheck(models.Model):
    """One check-back of an unresolved half message with its producer."""

    class Result(models.TextChoices):
        COMMIT = "commit", "commit"
        ROLLBACK = "rollback", "rollback"
        UNKNOWN = "unknown", "unknown"
        ERROR = "error", "error"
        TIMEOUT = "timeout", "timeout"

    half_message = models.ForeignKey(HalfMessage, on_delete=models.CASCADE, related_name="checks")
    number = models.IntegerField()
    result = models.CharField(max_length=16, choices=Result.choices)
    detail = models.TextField(blank=True)
    checked_at = models.DateTimeField(auto_now_add=True)


class InboxEntry(models.Model):
    """A message an idempotent consumer has handled: its effect and this row commit together."""

    consumer = models.CharField(max_length=255)
    message_id = models.CharField(max_length=255)
    processed_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["consumer", "message_id"], name="inbox_once")]
        indexes = [models.Index(fields=["processed_at"], name="inbox_processed_at")]
