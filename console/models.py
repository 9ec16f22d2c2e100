"""The console's tables: lag history samples and the audit log of operator actions."""
from django.db import models


class LagSample(models.Model):
    """A consumer group's total lag on one topic at one moment (one row per group and topic, not per
    partition, so a sample of 500 topics costs 500 rows at most per group)."""

    group_name = models.CharField(max_length=249)
    topic_name = models.CharField(max_length=249)
    lag = models.BigIntegerField()
    end_offset_total = models.BigIntegerField(help_text="sum of the log end offsets of the partitions the group has committed on")
    sampled_at = models.DateTimeField(db_index=True)

    class Meta:
        indexes = [models.Index(fields=["group_name", "sampled_at"], name="console_lag_group_time")]


class TopicSample(models.Model):
    """A topic's log end offsets (summed over its partitions) at one moment: the produce rate is the
    change between two samples (one row per topic, whatever its partitions)."""

    topic_name = models.CharField(max_length=249)
    end_offset_total = models.BigIntegerField()
    sampled_at = models.DateTimeField(db_index=True)


class AuditEntry(models.Model):
    """One operator action: who, when, what, and the state before and after."""

    actor = models.CharField(max_length=255)
    action = models.CharField(max_length=64)
    target = models.CharField(max_length=512)
    before = models.JSONField(null=True)
    after = models.JSONField(null=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-id"]
        # Viewing and operating are separate: give a view-only operator only the first.
        permissions = [
            ("view_console", "Can view the operators' console"),
            ("operate_console", "Can change state from the operators' console"),
        ]
