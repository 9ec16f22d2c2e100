"""Read use-cases for commands, the console and the API: groups, lag, resets."""
import dataclasses

from queueing import exceptions, models


@dataclasses.dataclass(frozen=True, kw_only=True)
class GroupPartitionRow:
    group: str
    topic: str
    partition: int
    current_offset: int | None
    log_end_offset: int
    lag: int | None
    member_id: str | None
    host: str | None
    client_id: str | None


@dataclasses.dataclass(frozen=True, kw_only=True)
class GroupSummary:
    name: str
    generation: int
    members: int
    state: str


def group_summaries(limit=None):
    """Consumer groups by name with their generation, member count and state (Stable or Empty), in
    one query; the first `limit` of them if given."""
    from django.db.models import Count

    rows = models.ConsumerGroup.objects.annotate(n=Count("members")).order_by("name")
    return [
        GroupSummary(name=g.name, generation=g.generation, members=g.n, state="Stable" if g.n else "Empty")
        for g in (rows[:limit] if limit is not None else rows)
    ]


def group_partitions(name):
    """Per partition the group has offsets for or is assigned: offset, log end, lag and owner.

    Raises GroupNotFound.
    """
    try:
        group = models.ConsumerGroup.objects.get(name=name)
    except models.ConsumerGroup.DoesNotExist:
        raise exceptions.GroupNotFound(group=name) from None
    committed = {(o.topic_id, o.partition): o.offset for o in models.CommittedOffset.objects.filter(group=group)}
    owners = {
        (a.topic_id, a.partition): a.member
        for a in models.GroupAssignment.objects.filter(group=group).select_related("member")
    }
    slots = set(committed) | set(owners)
    topic_ids = {t for t, _ in slots}
    names = dict(models.Topic.objects.filter(id__in=topic_ids).values_list("id", "name"))
    ends = {
        (p.topic_id, p.number): p.next_offset for p in models.Partition.objects.filter(topic_id__in=topic_ids)
    }
    rows = []
    for slot in sorted(slots, key=lambda s: (names.get(s[0], ""), s[1])):
        if slot[0] not in names:
            continue
        current = committed.get(slot)
        end = ends.get(slot, 0)
        owner = owners.get(slot)
        rows.append(
            GroupPartitionRow(
                group=name,
                topic=names[slot[0]],
                partition=slot[1],
                current_offset=current,
                log_end_offset=end,
                lag=None if current is None else max(0, end - current),
                member_id=owner.id if owner else None,
                host=owner.host if owner else None,
                client_id=owner.client_id if owner else None,
            )
        )
    return rows


def group_members(name):
    return list(models.GroupMember.objects.filter(group__name=name).order_by("id"))


def offset_resets(group=None, limit=50):
    rows = models.OffsetReset.objects.all()
    if group:
        rows = rows.filter(group_name=group)
    return list(rows[:limit])


@dataclasses.dataclass(frozen=True, kw_only=True)
class SharePartitionRow:
    group: str
    topic: str
    partition: int
    start_offset: int
    acquire_offset: int
    log_end_offset: int
    acquired: int
    available: int
    max_delivery_count: int
    dead_lettered: int

    @property
    def lag(self):
        """Records not finished yet: in the window or never acquired."""
        return max(0, self.log_end_offset - self.start_offset)


def share_group_summaries():
    """Share groups with the members seen within the session timeout."""
    import datetime

    from django.conf import settings
    from django.db.models import Count, Q
    from django.utils import timezone

    since = timezone.now() - datetime.timedelta(milliseconds=settings.SLUICE["SESSION_TIMEOUT_MS"])
    return [
        GroupSummary(name=g.name, generation=0, members=g.n, state="Stable" if g.n else "Empty")
        for g in models.ShareGroup.objects.annotate(n=Count("members", filter=Q(members__last_heartbeat__gte=since)))
        .order_by("name")
    ]


def share_group_partitions(name):
    """Per partition of a share group: window, records held and waiting, delivery counts, dead letters.

    Raises GroupNotFound.
    """
    from django.db.models import Count, Max, Min, Q

    try:
        group = models.ShareGroup.objects.get(name=name)
    except models.ShareGroup.DoesNotExist:
        raise exceptions.GroupNotFound(group=name) from None
    deliveries = {
        (d["topic_id"], d["partition"]): d
        for d in models.ShareDelivery.objects.filter(group_id=group.id)
        .values("topic_id", "partition")
        .annotate(acquired=Count("offset", filter=Q(state=1)), available=Count("offset", filter=Q(state=2)),
                  most=Max("delivery_count"), first=Min("offset"))
    }
    dead = {
        (d["topic_name"], d["partition"]): d["n"]
        for d in models.DeliveryAttempt.objects.filter(group_name=name, outcome="dead_lettered")
        .values("topic_name", "partition").annotate(n=Count("id"))
    }
    rows = []
    windows = models.SharePartition.objects.filter(group=group).select_related("topic").order_by("topic__name", "partition")
    ends = {(p.topic_id, p.number): p.next_offset for p in models.Partition.objects.filter(
        topic_id__in={w.topic_id for w in windows})}
    for window in windows:
        slot = (window.topic_id, window.partition)
        held = deliveries.get(slot, {})
        rows.append(SharePartitionRow(
            # The stored start moves at the next acquisition; the first unfinished record is exact now.
            group=name, topic=window.topic.name, partition=window.partition,
            start_offset=held["first"] if held else window.acquire_offset,
            acquire_offset=window.acquire_offset, log_end_offset=ends.get(slot, 0),
            acquired=held.get("acquired", 0), available=held.get("available", 0),
            max_delivery_count=held.get("most") or 0, dead_lettered=dead.get((window.topic.name, window.partition), 0),
        ))
    return rows


def share_group_members(name):
    return list(models.ShareGroupMember.objects.filter(group__name=name).order_by("id"))
