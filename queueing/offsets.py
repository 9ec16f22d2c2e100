"""Offset resets for consumer groups: plan, then execute with fencing and an audit trail."""
import csv
import datetime
import io
import re

from django.db import connection, transaction
from django.db.models import F

from queueing import exceptions, groups, models, storage, types

_DURATION = re.compile(
    r"^(?P<sign>-)?P(?:(?P<days>\d+)D)?(?:T(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?$"
)


def parse_duration(text):
    """Parse an ISO-8601 duration PnDTnHnMnS (as Kafka's --by-duration takes) into a timedelta."""
    match = _DURATION.match(text or "")
    if not match or text in ("P", "PT") or text.endswith("T"):
        raise exceptions.InvalidArgument(reason=f"{text!r} is not a duration of the form PnDTnHnMnS, e.g. PT1H30M")
    parts = {k: float(v) for k, v in match.groupdict().items() if v and k != "sign"}
    try:
        return datetime.timedelta(**parts)
    except OverflowError:
        raise exceptions.InvalidArgument(reason=f"{text!r} is longer than a duration can be "
                                                f"({datetime.timedelta.max.days} days)") from None


def parse_datetime(text):
    """Parse an ISO-8601 moment with its time zone; one without a zone is refused, since UTC and
    the local zone would both be guesses."""
    try:
        moment = datetime.datetime.fromisoformat(text)
    except (TypeError, ValueError):
        raise exceptions.InvalidArgument(
            reason=f"{text!r} is not an ISO-8601 date and time, e.g. 2026-11-24T09:00:00Z"
        ) from None
    if moment.tzinfo is None:
        raise exceptions.InvalidArgument(
            reason=f"{text!r} has no time zone: add Z for UTC or an offset, e.g. {moment.isoformat()}Z or "
                   f"{moment.isoformat()}+01:00"
        )
    return moment


def parse_topic_spec(spec):
    """Parse `topic` or `topic:0,1,2` into (topic, [partitions] or None)."""
    name, _, rest = spec.partition(":")
    if not rest:
        return name, None
    try:
        partitions = sorted({int(p) for p in rest.split(",")})
    except ValueError:
        raise exceptions.InvalidArgument(reason=f"{spec!r}: partitions must be numbers, e.g. orders:0,2") from None
    return name, partitions


def parse_plan_file(text):
    """Read Kafka's reset CSV (topic,partition,offset per line) into {(topic, partition): offset}."""
    wanted = {}
    for number, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not row or not "".join(row).strip():
            continue
        if len(row) != 3:
            raise exceptions.InvalidArgument(reason=f"line {number}: expected topic,partition,offset")
        try:
            wanted[(row[0].strip(), int(row[1]))] = int(row[2])
        except ValueError:
            raise exceptions.InvalidArgument(reason=f"line {number}: partition and offset must be numbers") from None
    if not wanted:
        raise exceptions.InvalidArgument(reason="the file names no partitions")
    return wanted


def plan_reset(group, *, topic_specs=(), all_topics=False, scenario, value=None):
    """Return the [OffsetPlanRow] a reset would apply; changes nothing.

    scenario is one of to_earliest, to_latest, to_current, to_offset (value: int), shift_by
    (value: int), to_datetime (value: datetime), by_duration (value: timedelta), from_file
    (value: {(topic, partition): offset}). New offsets are clamped to the log's bounds. A group
    that does not exist yet has no current offsets (Kafka allows positioning a new group too).
    """
    groups.validate_group_name(group)
    group_row = models.ConsumerGroup.objects.filter(name=group).first()
    targets = _targets(group_row, topic_specs, all_topics, scenario, value)
    committed = {
        (o.topic_id, o.partition): o.offset for o in models.CommittedOffset.objects.filter(group=group_row)
    } if group_row else {}
    now = groups.db_now()
    plan = []
    for topic, part in targets:
        current = committed.get((topic.id, part.number))
        start, end = part.log_start_offset, part.next_offset
        wanted = _wanted(scenario, value, topic, part, current, now)
        plan.append(
            types.OffsetPlanRow(
                group=group,
                topic=topic.name,
                partition=part.number,
                current_offset=current,
                new_offset=min(max(wanted, start), end),
                log_start_offset=start,
                log_end_offset=end,
            )
        )
    return plan


def _targets(group_row, topic_specs, all_topics, scenario, value):
    if scenario == "from_file" and not topic_specs and not all_topics:
        topic_specs = sorted({name for name, _ in value})
    if all_topics and group_row is None:
        specs = []
    elif all_topics:
        ids = set(models.CommittedOffset.objects.filter(group=group_row).values_list("topic_id", flat=True))
        ids |= set(models.GroupAssignment.objects.filter(group=group_row).values_list("topic_id", flat=True))
        specs = [(t.name, None) for t in models.Topic.objects.filter(id__in=ids)]
    else:
        specs = [parse_topic_spec(s) for s in topic_specs]
    if not specs:
        raise exceptions.InvalidArgument(reason="name --topic TOPIC[:P,...] or --all-topics (the group has no topics)")
    targets = []
    for name, wanted in specs:
        try:
            topic = models.Topic.objects.get(name=name)
        except models.Topic.DoesNotExist:
            raise exceptions.TopicNotFound(name=name) from None
        parts = {p.number: p for p in models.Partition.objects.filter(topic=topic)}
        for number in wanted if wanted is not None else sorted(parts):
            if number not in parts:
                raise exceptions.PartitionNotFound(topic=name, partition=number)
            if scenario == "from_file" and (name, number) not in value:
                continue
            targets.append((topic, parts[number]))
    return targets


def _wanted(scenario, value, topic, part, current, now):
    start, end = part.log_start_offset, part.next_offset
    if scenario == "to_earliest":
        return start
    if scenario == "to_latest":
        return end
    if scenario == "to_current":
        return end if current is None else current
    if scenario == "to_offset":
        return value
    if scenario == "shift_by":
        return (end if current is None else current) + value
    if scenario in ("to_datetime", "by_duration"):
        moment = value if scenario == "to_datetime" else now - value
        found = storage.offset_for_timestamp(topic_id=topic.id, partition=part.number, timestamp=moment)
        return end if found is None else found
    if scenario == "from_file":
        return value[(topic.name, part.number)]
    raise exceptions.InvalidArgument(reason=f"unknown reset scenario {scenario!r}")


def execute_reset(plan, *, actor, scenario):
    """Apply a plan in one transaction: store the offsets, fence the live generation, audit.

    Members keep their partitions but move to a new generation, so a commit they had in flight is
    refused and they resume from the new offsets. A group that does not exist yet is created with
    the plan's offsets. Returns the fenced generation.
    """
    if not plan:
        raise exceptions.InvalidArgument(reason="the plan is empty")
    group = plan[0].group
    with transaction.atomic():
        models.ConsumerGroup.objects.get_or_create(name=group)
        locked = models.ConsumerGroup.objects.select_for_update().get(name=group)
        fenced = locked.generation
        topic_ids = dict(models.Topic.objects.filter(name__in={r.topic for r in plan}).values_list("name", "id"))
        for row in plan:
            stored = models.CommittedOffset.objects.filter(
                group=locked, topic_id=topic_ids[row.topic], partition=row.partition
            ).values_list("offset", flat=True).first()
            models.CommittedOffset.objects.update_or_create(
                group=locked,
                topic_id=topic_ids[row.topic],
                partition=row.partition,
                defaults={"offset": row.new_offset, "committed_at": groups.db_now()},
            )
            models.OffsetReset.objects.create(
                group_name=group,
                topic_name=row.topic,
                partition=row.partition,
                before=stored,
                after=row.new_offset,
                scenario=scenario[:255],
                actor=actor[:255],
                generation_fenced=fenced,
            )
        models.ConsumerGroup.objects.filter(pk=locked.pk).update(generation=F("generation") + 1)
        models.GroupAssignment.objects.filter(group=locked).update(generation=F("generation") + 1)
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, %s)", [f"sluice_g{locked.id}", str(fenced + 1)])
    return fenced
