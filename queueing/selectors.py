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


def group_summaries():
    """Every consumer group with its generation, member count and state (Stable or Empty)."""
    result = []
    for group in models.ConsumerGroup.objects.order_by("name"):
        members = group.members.count()
        result.append(
            GroupSummary(name=group.name, generation=group.generation, members=members,
                         state="Stable" if members else "Empty")
        )
    return result


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
