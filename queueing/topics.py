"""Topic administration: create, describe, alter (add partitions), delete; and the producers' topic cache."""
import re
import time

from django.conf import settings
from django.db import IntegrityError, transaction

from queueing import exceptions, models, types

_NAME = re.compile(models.TOPIC_NAME_PATTERN)
_CACHE_SECONDS = 5.0
_cache: dict[str, tuple[float, types.TopicInfo]] = {}
# Topics this process created in a transaction still open (name: when): not cached until it
# commits, as a rollback would leave the cache naming a topic that does not exist. An entry older
# than the cache's lifetime is dropped (a savepoint rolled back inside a transaction that went on
# never runs its on_commit), so staleness stays bounded by the cache's lifetime as before.
_uncommitted: dict[str, float] = {}


def validate_name(name):
    """Raise InvalidTopicName unless name follows Kafka's rule."""
    if not isinstance(name, str) or not _NAME.match(name) or name in (".", ".."):
        raise exceptions.InvalidTopicName(name=name)


def _positive(value, what, allow_none=False):
    if value is None and allow_none:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise exceptions.InvalidArgument(reason=f"{what} must be a positive whole number, not {value!r}")
    return value


def _policy(value):
    if value not in models.Topic.CleanupPolicy.values:
        raise exceptions.InvalidArgument(reason=f"cleanup.policy is delete or compact, not {value!r}")
    return value


def create_topic(name, *, partitions=None, retention_ms=None, retention_bytes=None, max_message_bytes=None,
                 cleanup_policy=models.Topic.CleanupPolicy.DELETE):
    """Create a topic and its partitions in one transaction; raise TopicExists if the name is taken."""
    validate_name(name)
    config = settings.SLUICE
    partitions = _positive(partitions if partitions is not None else config["DEFAULT_PARTITIONS"], "partitions")
    if partitions > 10_000:
        raise exceptions.InvalidArgument(reason="a topic has at most 10000 partitions")
    topic = models.Topic(
        name=name,
        partition_count=partitions,
        retention_ms=_positive(retention_ms, "retention.ms", allow_none=True),
        retention_bytes=_positive(retention_bytes, "retention.bytes", allow_none=True),
        max_message_bytes=_positive(max_message_bytes or config["MAX_MESSAGE_BYTES"], "max.message.bytes"),
        cleanup_policy=_policy(cleanup_policy or models.Topic.CleanupPolicy.DELETE),
    )
    try:
        with transaction.atomic():
            topic.save()
            models.Partition.objects.bulk_create(models.Partition(topic=topic, number=n) for n in range(partitions))
    except IntegrityError:
        raise exceptions.TopicExists(name=name) from None
    if transaction.get_connection().in_atomic_block:
        _uncommitted[name] = time.monotonic()
        transaction.on_commit(lambda: _uncommitted.pop(name, None))
    return _info(topic)


def _info(topic):
    return types.TopicInfo(
        id=topic.id,
        name=topic.name,
        partition_count=topic.partition_count,
        max_message_bytes=topic.max_message_bytes,
        retention_ms=topic.retention_ms,
        retention_bytes=topic.retention_bytes,
        cleanup_policy=topic.cleanup_policy,
    )


def get_topic(name):
    """Return the topic's TopicInfo; raise TopicNotFound."""
    try:
        return _info(models.Topic.objects.get(name=name))
    except models.Topic.DoesNotExist:
        raise exceptions.TopicNotFound(name=name) from None


def cached_topic(name):
    """Return the topic's TopicInfo from a short-lived per-process cache (producers' hot path). A
    topic created by the transaction still open is read, not cached, until that transaction commits."""
    now = time.monotonic()
    if name in _uncommitted:
        if transaction.get_connection().in_atomic_block and now - _uncommitted[name] < _CACHE_SECONDS:
            return get_topic(name)
        del _uncommitted[name]  # that transaction ended: committed (on_commit ran) or rolled back
    hit = _cache.get(name)
    if hit is not None and now - hit[0] < _CACHE_SECONDS:
        return hit[1]
    info = get_topic(name)
    _cache[name] = (now, info)
    return info


def forget_topic(name):
    _cache.pop(name, None)


def list_topics():
    return [_info(t) for t in models.Topic.objects.all()]


def describe_topic(name):
    """Return (TopicInfo, [PartitionInfo]) for a topic."""
    info = get_topic(name)
    rows = models.Partition.objects.filter(topic_id=info.id).order_by("number")
    return info, [
        types.PartitionInfo(
            topic=name,
            partition=p.number,
            log_start_offset=p.log_start_offset,
            log_end_offset=p.next_offset,
            size_bytes=p.size_bytes,
        )
        for p in rows
    ]


def alter_topic(name, *, partitions=None, retention_ms=None, retention_bytes=None, max_message_bytes=None,
                cleanup_policy=None):
    """Change a topic's settings; partitions can only grow (as in Kafka), which moves keys."""
    with transaction.atomic():
        try:
            topic = models.Topic.objects.select_for_update().get(name=name)
        except models.Topic.DoesNotExist:
            raise exceptions.TopicNotFound(name=name) from None
        if partitions is not None:
            _positive(partitions, "partitions")
            if partitions <= topic.partition_count:
                raise exceptions.InvalidArgument(
                    reason=f"topic {name!r} has {topic.partition_count} partitions; the count can only grow"
                )
            if partitions > 10_000:
                raise exceptions.InvalidArgument(reason="a topic has at most 10000 partitions")
            models.Partition.objects.bulk_create(
                models.Partition(topic=topic, number=n) for n in range(topic.partition_count, partitions)
            )
            topic.partition_count = partitions
        if retention_ms is not None:
            topic.retention_ms = _positive(retention_ms, "retention.ms")
        if retention_bytes is not None:
            topic.retention_bytes = _positive(retention_bytes, "retention.bytes")
        if max_message_bytes is not None:
            topic.max_message_bytes = _positive(max_message_bytes, "max.message.bytes")
        if cleanup_policy is not None:
            topic.cleanup_policy = _policy(cleanup_policy)
        topic.save()
    forget_topic(name)
    return _info(topic)


def delete_topic(name):
    """Delete a topic, its records, and every group's offsets and assignments for it."""
    with transaction.atomic():
        try:
            topic = models.Topic.objects.select_for_update().get(name=name)
        except models.Topic.DoesNotExist:
            raise exceptions.TopicNotFound(name=name) from None
        # Lock the partitions first so no append is half-way through while the rows go.
        list(models.Partition.objects.select_for_update().filter(topic=topic))
        models.Record.objects.filter(topic_id=topic.id).delete()
        models.ProducerState.objects.filter(topic_id=topic.id).delete()
        topic.delete()
    forget_topic(name)
