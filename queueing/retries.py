"""Retry policies (delivery limit, back-off, dead-letter topic) and dead-lettering itself."""
import dataclasses
import datetime
import random

from django.conf import settings
from django.db import transaction

from queueing import exceptions, models, partitioner, storage, topics, types

# RocketMQ's retry schedule for concurrent consumers: delay levels 3 to 18 (10 s ... 2 h).
ROCKETMQ_RETRY_LEVELS_MS = [
    10_000, 30_000, 60_000, 120_000, 180_000, 240_000, 300_000, 360_000,
    420_000, 480_000, 540_000, 600_000, 1_200_000, 1_800_000, 3_600_000, 7_200_000,
]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Policy:
    delivery_limit: int
    backoff: str
    backoff_base_ms: int
    backoff_max_ms: int
    backoff_levels_ms: tuple[int, ...]
    dead_letter_topic: str

    def delay_ms(self, attempt, rng=random):
        """Back-off before the delivery after failed attempt number `attempt` (1-based)."""
        if self.backoff == models.Backoff.LEVELS:
            levels = self.backoff_levels_ms or tuple(ROCKETMQ_RETRY_LEVELS_MS)
            return levels[min(attempt, len(levels)) - 1]
        ceiling = min(self.backoff_max_ms, self.backoff_base_ms * 2 ** min(attempt - 1, 40))
        # "Equal jitter": half fixed, half random, so retries of a burst spread without collapsing to 0.
        return int(ceiling / 2 + rng.random() * ceiling / 2)


def resolve(group_row, topic_row):
    """The policy for a group's deliveries of a topic: the group's fields, then the topic's, then settings."""
    config = settings.SLUICE

    def pick(field, default):
        for row in (group_row, topic_row):
            value = getattr(row, field, None) if row is not None else None
            if value not in (None, ""):
                return value
        return default

    return Policy(
        delivery_limit=pick("delivery_limit", config["DELIVERY_LIMIT"]),
        backoff=pick("backoff", models.Backoff.EXPONENTIAL),
        backoff_base_ms=pick("backoff_base_ms", config["BACKOFF_BASE_MS"]),
        backoff_max_ms=pick("backoff_max_ms", config["BACKOFF_MAX_MS"]),
        backoff_levels_ms=tuple(pick("backoff_levels_ms", ()) or ()),
        dead_letter_topic=pick("dead_letter_topic", f"{group_row.name}.DLQ"),
    )


def validate(*, delivery_limit=None, backoff=None, backoff_base_ms=None, backoff_max_ms=None,
             backoff_levels_ms=None, dead_letter_topic=None):
    """Raise InvalidArgument for a policy field out of range; return the fields that were given."""
    given = {k: v for k, v in locals().items() if v is not None}
    for field in ("delivery_limit", "backoff_base_ms", "backoff_max_ms"):
        value = given.get(field)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise exceptions.InvalidArgument(reason=f"{field} must be a positive whole number, not {value!r}")
    if "delivery_limit" in given and given["delivery_limit"] > 1000:
        raise exceptions.InvalidArgument(reason="delivery_limit is at most 1000")
    if "backoff" in given and given["backoff"] not in models.Backoff.values:
        raise exceptions.InvalidArgument(reason=f"backoff must be one of {', '.join(models.Backoff.values)}")
    levels = given.get("backoff_levels_ms")
    if levels is not None and (
        not isinstance(levels, (list, tuple)) or not levels
        or not all(isinstance(v, int) and 0 <= v <= 366 * 86_400_000 for v in levels)
    ):
        raise exceptions.InvalidArgument(reason="backoff_levels_ms must be a list of delays in milliseconds")
    if "dead_letter_topic" in given:
        topics.validate_name(given["dead_letter_topic"])
    return given


def dead_letter_topic_names():
    """Every topic named as a dead-letter topic by a topic's or a group's policy (which may not exist yet)."""
    named = set()
    for model in (models.Topic, models.ConsumerGroup, models.ShareGroup):
        named |= set(model.objects.exclude(dead_letter_topic=None).values_list("dead_letter_topic", flat=True))
    return named


def is_dead_letter_topic(name):
    """Whether name holds dead letters: a policy names it, or it is a default GROUP.DLQ topic."""
    return name.endswith(".DLQ") or name in dead_letter_topic_names()


def dead_letter_topic(name):
    """Return the dead-letter topic's TopicInfo, creating it (one partition) if it is missing."""
    try:
        return topics.cached_topic(name)
    except exceptions.TopicNotFound:
        try:
            with transaction.atomic():
                return topics.create_topic(name, partitions=1)
        except exceptions.TopicExists:
            return topics.get_topic(name)


def dead_letter(*, policy, group, record, attempts, error):
    """Append record to the policy's dead-letter topic with headers saying where it came from.

    Runs in the caller's transaction: callers record the final failure (an offset commit, the
    removal of a share delivery) in the same one, so a record cannot be lost between the two.
    Returns the dead letter's RecordMetadata.
    """
    target = dead_letter_topic(policy.dead_letter_topic)
    headers = dict(record.headers or {})
    headers.update({
        types.DLQ_ORIGINAL_TOPIC: record.topic,
        types.DLQ_ORIGINAL_PARTITION: str(record.partition),
        types.DLQ_ORIGINAL_OFFSET: str(record.offset),
        types.DLQ_GROUP: group,
        types.DLQ_ATTEMPTS: str(attempts),
        types.DLQ_ERROR: (error or "")[:2000],
        types.DLQ_FAILED_AT: datetime.datetime.now(datetime.UTC).isoformat(),
    })
    outgoing = types.OutgoingRecord(key=record.key, value=record.value, value_format=record.value_format, headers=headers)
    try:
        return _append_dead_letter(target, outgoing)
    except exceptions.PartitionNotFound:
        # The cached topic was deleted or recreated since it was read: look it up again.
        topics.forget_topic(policy.dead_letter_topic)
        return _append_dead_letter(dead_letter_topic(policy.dead_letter_topic), outgoing)


def _append_dead_letter(target, outgoing):
    key = outgoing.key
    partition = 0 if key is None else partitioner.partition_for_key(key, target.partition_count)
    base, _ = storage.append_records(topic_id=target.id, partition=partition, records=[outgoing])
    return types.RecordMetadata(topic=target.name, partition=partition, offset=base)


def record_attempt(*, group, record, attempt, member_id, outcome, error="", traceback=""):
    models.DeliveryAttempt.objects.create(
        group_name=group,
        topic_name=record.topic,
        partition=record.partition,
        offset=record.offset,
        attempt=attempt,
        member_id=member_id or "",
        outcome=outcome,
        error=(error or "")[:10_000],
        traceback=(traceback or "")[:50_000],
    )


def configure_topic(name, **policy):
    """Set a topic's own retry policy (groups without one of their own use it)."""
    fields = validate(**policy)
    with transaction.atomic():
        try:
            topic = models.Topic.objects.select_for_update().get(name=name)
        except models.Topic.DoesNotExist:
            raise exceptions.TopicNotFound(name=name) from None
        for field, value in fields.items():
            setattr(topic, field, value)
        topic.save()
    return topic
