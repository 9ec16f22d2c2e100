"""Consumer-group coordination: join, heartbeat, leave, rebalance and the generations that fence."""
import datetime
import logging

from django.db import connection, transaction
from django.db.models import F

from queueing import exceptions, models, retries, types

logger = logging.getLogger("sluice.groups")


def db_now():
    """The database server's clock: every member is judged by the same one."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT now()")
        return cursor.fetchone()[0]


def validate_group_name(name):
    if not isinstance(name, str) or not 1 <= len(name) <= 249 or not name.isprintable():
        raise exceptions.InvalidArgument(reason=f"invalid group name {name!r}: 1 to 249 printable characters")


def validate_subscription(group, topic_names, *, batch, batch_name, batch_limit):
    """Check what a member subscribes with; return the topic names sorted, without repeats."""
    validate_group_name(group)
    if not topic_names or isinstance(topic_names, str):
        raise exceptions.InvalidArgument(reason="subscribe to a list of at least one topic")
    if not isinstance(batch, int) or isinstance(batch, bool) or not 1 <= batch <= batch_limit:
        raise exceptions.InvalidArgument(reason=f"{batch_name} must be between 1 and {batch_limit}")
    return sorted(set(topic_names))


def _locked_group(name, create):
    """Return the group row locked FOR UPDATE (every membership change and reset is serialised on it)."""
    if create:
        validate_group_name(name)
        models.ConsumerGroup.objects.get_or_create(name=name)
    try:
        return models.ConsumerGroup.objects.select_for_update().get(name=name)
    except models.ConsumerGroup.DoesNotExist:
        raise exceptions.GroupNotFound(group=name) from None


def join(group, topic_names, *, member_id, client_id="", host="", session_timeout_ms):
    """Add (or re-add) a member to a group, rebalance, and return its Assignment."""
    for name in topic_names:
        models.Topic.objects.filter(name=name).exists() or _missing_topic(name)
    with transaction.atomic():
        locked = _locked_group(group, create=True)
        now = db_now()
        _expire_members(locked, now)
        models.GroupMember.objects.update_or_create(
            id=member_id,
            defaults={
                "group": locked,
                "client_id": client_id[:255],
                "host": host[:255],
                "topics": sorted(set(topic_names)),
                "session_timeout_ms": session_timeout_ms,
                "joined_at": now,
                "last_heartbeat": now,
            },
        )
        _rebalance(locked, reason=f"member {member_id} joined")
        return _assignment(locked, member_id)


def _missing_topic(name):
    raise exceptions.TopicNotFound(name=name)


def heartbeat(group_id, member_id):
    """Record that a member is alive, expire members past their session timeout, and return the
    group's current generation. Raises UnknownMember if this member was expired or removed."""
    now = db_now()
    touched = models.GroupMember.objects.filter(id=member_id, group_id=group_id).update(last_heartbeat=now)
    if not touched:
        raise exceptions.UnknownMember(member_id=member_id, group=group_id)
    if _expired(models.GroupMember.objects.filter(group_id=group_id), now):
        with transaction.atomic():
            locked = models.ConsumerGroup.objects.select_for_update().get(id=group_id)
            _expire_members(locked, db_now())
    return models.ConsumerGroup.objects.values_list("generation", flat=True).get(id=group_id)


def _expired(members, now):
    return [m for m in members if m.last_heartbeat + datetime.timedelta(milliseconds=m.session_timeout_ms) < now]


def _expire_members(locked, now):
    """Remove members whose session timed out and rebalance if any did; the group must be locked."""
    dead = _expired(models.GroupMember.objects.filter(group=locked), now)
    if not dead:
        return
    models.GroupMember.objects.filter(id__in=[m.id for m in dead]).delete()
    logger.info(
        "group %s: expired %d member(s)", locked.name, len(dead), extra={"members": [m.id for m in dead]}
    )
    _rebalance(locked, reason="session timeout")


def leave(group_id, member_id):
    """Remove a member and hand its partitions to the others."""
    with transaction.atomic():
        try:
            locked = models.ConsumerGroup.objects.select_for_update().get(id=group_id)
        except models.ConsumerGroup.DoesNotExist:
            return
        if models.GroupMember.objects.filter(id=member_id, group=locked).delete()[0]:
            _rebalance(locked, reason=f"member {member_id} left")


CONSOLE_PREFIX = "console-consumer-"


def delete_if_empty(name):
    """Delete a group, its offsets and its history of members if no member is alive (a member past
    its session timeout counts as gone). Returns True if it was deleted."""
    with transaction.atomic():
        try:
            locked = models.ConsumerGroup.objects.select_for_update().get(name=name)
        except models.ConsumerGroup.DoesNotExist:
            return False
        _expire_members(locked, db_now())
        if models.GroupMember.objects.filter(group=locked).exists():
            return False
        locked.delete()
    logger.info("group %s: deleted when empty", name, extra={"group": name})
    return True


def delete_group(name):
    """Delete a group with its offsets and assignments, once no member is alive (one past its session
    timeout is dropped first). Raises GroupNotFound, or GroupHasMembers: deleting the row under a
    live member would crash it on its next heartbeat or commit."""
    with transaction.atomic():
        try:
            locked = models.ConsumerGroup.objects.select_for_update().get(name=name)
        except models.ConsumerGroup.DoesNotExist:
            raise exceptions.GroupNotFound(group=name) from None
        _expire_members(locked, db_now())
        live = models.GroupMember.objects.filter(group=locked).count()
        if live:
            raise exceptions.GroupHasMembers(group=name, count=live)
        locked.delete()
    logger.info("group %s: deleted", name, extra={"group": name})


def expire_console_groups():
    """Delete the console consumers' own groups (console-consumer-…) that no live member uses, as
    Kafka expires an empty group; a console consumer that was killed leaves one. Returns how many."""
    names = models.ConsumerGroup.objects.filter(name__startswith=CONSOLE_PREFIX).values_list("name", flat=True)
    return sum(delete_if_empty(name) for name in list(names))


def sync(group_id, member_id):
    """Return the member's Assignment in the current generation; raise UnknownMember."""
    group = models.ConsumerGroup.objects.get(id=group_id)
    if not models.GroupMember.objects.filter(id=member_id, group=group).exists():
        raise exceptions.UnknownMember(member_id=member_id, group=group.name)
    return _assignment(group, member_id)


def _assignment(group, member_id):
    rows = (
        models.GroupAssignment.objects.filter(group=group, member_id=member_id)
        .order_by("topic__name", "partition")
        .values_list("topic_id", "topic__name", "partition", "generation")
    )
    generation = group.generation
    partitions = []
    for topic_id, name, partition, row_generation in rows:
        if row_generation == generation:
            partitions.append((topic_id, name, partition))
    return types.Assignment(group_id=group.id, member_id=member_id, generation=generation, partitions=tuple(partitions))


def _rebalance(locked, *, reason):
    """Bump the generation and assign partitions with Kafka's range assignor; group must be locked.

    The new generation fences every member's in-flight commit; members learn of it by heartbeat or
    by the NOTIFY on the group's channel, and re-sync.
    """
    members = list(models.GroupMember.objects.filter(group=locked).order_by("id"))
    locked.generation = F("generation") + 1
    locked.rebalanced_at = db_now()
    locked.save(update_fields=["generation", "rebalanced_at"])
    locked.refresh_from_db(fields=["generation"])
    models.GroupAssignment.objects.filter(group=locked).delete()
    wanted = sorted({name for m in members for name in m.topics})
    rows = []
    for topic in models.Topic.objects.filter(name__in=wanted):
        subscribers = [m for m in members if topic.name in m.topics]
        for partition, member in _range_assign(topic.partition_count, subscribers):
            rows.append(
                models.GroupAssignment(
                    group=locked, topic=topic, partition=partition, member=member, generation=locked.generation
                )
            )
    models.GroupAssignment.objects.bulk_create(rows)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_notify(%s, %s)", [f"sluice_g{locked.id}", str(locked.generation)])
    logger.info(
        "group %s: generation %d, %d member(s), %d partition(s): %s",
        locked.name, locked.generation, len(members), len(rows), reason,
        extra={"group": locked.name, "generation": locked.generation},
    )


def _range_assign(partition_count, members):
    """Kafka's RangeAssignor for one topic: contiguous ranges, the first members get one extra."""
    if not members:
        return []
    per_member, extra = divmod(partition_count, len(members))
    pairs = []
    start = 0
    for index, member in enumerate(members):
        count = per_member + (1 if index < extra else 0)
        pairs.extend((p, member) for p in range(start, start + count))
        start += count
    return pairs


def committed_offsets(group_id, slots):
    """Return {(topic_id, partition): committed offset} for the given slots that have one."""
    topic_ids = {t for t, _ in slots}
    rows = models.CommittedOffset.objects.filter(group_id=group_id, topic_id__in=topic_ids)
    return {(r.topic_id, r.partition): r.offset for r in rows if (r.topic_id, r.partition) in slots}


def log_bounds(slots):
    """Return {(topic_id, partition): (log start offset, log end offset)}."""
    topic_ids = {t for t, _ in slots}
    rows = models.Partition.objects.filter(topic_id__in=topic_ids)
    return {
        (p.topic_id, p.number): (p.log_start_offset, p.next_offset) for p in rows if (p.topic_id, p.number) in slots
    }


def configure_group(name, **policy):
    """Create or change an ordered group's retry policy (see retries.validate for the fields)."""
    validate_group_name(name)
    fields = retries.validate(**policy)
    group, _ = models.ConsumerGroup.objects.get_or_create(name=name)
    for field, value in fields.items():
        setattr(group, field, value)
    group.save()
    return group
