"""Replay: copy selected records of a topic (dead letters, typically) to a topic, outside any consumer group.

A replay reads its source with bounded range reads (storage.replay), so no group's offsets move. It
is planned first (plan_replay: the selection is read once, without values, and fixed), then run
(execute_replay: the same ranges are read again, batch by batch, and appended by an idempotent
producer). Each copy carries types.REPLAY_ORIGIN, "topic-partition@offset" of the record it copies.

Where a record goes:
- to_topic: that topic; to_original: the topic its types.DLQ_ORIGINAL_TOPIC header names, for the
  group its types.DLQ_GROUP header names only (a redrive: the copy carries types.REDRIVE_GROUP, and
  the workers of every other group pass over it), or with all_groups for every group reading it.
- A keyed record goes to the partition its key picks (Kafka's murmur2, as a producer would), so
  per-key order holds in the target. A keyless dead letter going back to its original topic goes
  to the partition named by types.DLQ_ORIGINAL_PARTITION; any other keyless record goes to its
  source partition modulo the target's partition count, so order per source partition holds.
- Headers are kept, except that the DLQ_* headers are dropped when a record goes back to the topic
  its DLQ_ORIGINAL_TOPIC names: there it is the original record again, and if it fails again it is
  dead-lettered with fresh ones. Copied anywhere else, they still say why it failed, so they stay.
  A REPLAY_ORIGIN already present (a replay of a replay) is replaced by the newest origin; a
  REDRIVE_GROUP already present is dropped, and set again only by a redrive.
- Keys, values and value formats are copied byte for byte; the timestamp is the replay's.
"""
import datetime

from queueing import exceptions, partitioner, producer, topics, types
from queueing.storage import replay as storage

DLQ_HEADERS = (
    types.DLQ_ORIGINAL_TOPIC,
    types.DLQ_ORIGINAL_PARTITION,
    types.DLQ_ORIGINAL_OFFSET,
    types.DLQ_GROUP,
    types.DLQ_ATTEMPTS,
    types.DLQ_ERROR,
    types.DLQ_FAILED_AT,
)
SAMPLE_SIZE = 5
_SCAN_BATCH = 1000
_INVALID_KEPT = 1000  # invalid rows a plan lists; invalid_count counts them all


def parse_offset_spec(text):
    """Parse `PARTITION:OFFSET` (one record) into (partition, offset)."""
    partition, sep, offset = (text or "").partition(":")
    try:
        parsed = int(partition), int(offset)
    except ValueError:
        parsed = None
    if not sep or parsed is None:
        raise exceptions.InvalidArgument(reason=f"{text!r} is not PARTITION:OFFSET, e.g. 0:42")
    if min(parsed) < 0:
        raise exceptions.InvalidArgument(reason=f"{text!r}: partition and offset must be 0 or more")
    return parsed


def plan_replay(
    source,
    *,
    to_topic=None,
    to_original=False,
    all_groups=False,
    partitions=None,
    from_offset=None,
    to_offset=None,
    since=None,
    until=None,
    key=None,
    offsets=None,
    limit=None,
):
    """Return the types.ReplayPlan of a replay, reading the selection once; changes nothing.

    Selection: every record of source, or of the partitions named; narrowed by an offset range
    [from_offset, to_offset) (start inclusive, end exclusive, as Kafka's), a time range [since,
    until) of record timestamps and a key, which combine; or single records, offsets=[(partition,
    offset)], which combine with nothing else. limit keeps the first records selected, partition
    by partition in offset order. The log end of each partition is fixed here, so records appended
    later are not part of the replay.

    to_original redrives each dead letter to the group that failed it only; with all_groups, every
    group reading its original topic gets it again.

    Raises TopicNotFound (source or to_topic), PartitionNotFound, RecordNotFound (offsets) and
    InvalidArgument. Records that cannot be replayed are listed in the plan, not raised.
    """
    since, until = _aware(since), _aware(until)
    _check(to_topic, to_original, partitions, from_offset, to_offset, since, until, key, offsets, limit)
    if all_groups and not to_original:
        raise exceptions.InvalidArgument(reason="all_groups goes with to_original")
    info = topics.get_topic(source)
    redrive = bool(to_original and not all_groups)
    targets = _Targets(source, topics.get_topic(to_topic) if to_topic is not None else None, redrive=redrive)
    selection = {
        "since": since,
        "until": until,
        "key": producer.encode_key(key),
        "limit": limit,
        "ranges": _ranges(info, partitions, from_offset, to_offset, since, offsets),
    }
    scanned = _scan(info.id, selection, targets)
    seen = scanned.pop("seen")
    for partition, offset in offsets or ():
        # Inside the log's bounds yet missing: removed by compaction.
        if (partition, offset) not in seen:
            raise exceptions.RecordNotFound(topic=source, partition=partition, offset=offset)
    return types.ReplayPlan(source=source, to_topic=to_topic, all_groups=bool(all_groups), **scanned, **selection)


def _scan(topic_id, selection, targets):
    """Read the selection without values; return the plan's counts, sample and invalid rows."""
    count, per_target, sample, invalid, invalid_count, seen = 0, {}, [], [], 0, set()
    for partition, rows in _batches(topic_id, selection, storage.scan_replay_range, _SCAN_BATCH):
        for offset, key, headers, value_size, preview in rows:
            count += 1
            seen.add((partition, offset))
            target, problem = targets.resolve(partition, key, headers, value_size)
            row = types.ReplayRow(
                partition=partition, offset=offset, key=key, size=value_size, preview=preview,
                target=target, problem=problem,
            )
            if len(sample) < SAMPLE_SIZE:
                sample.append(row)
            if problem:
                invalid_count += 1
                if len(invalid) < _INVALID_KEPT:
                    invalid.append(row)
            else:
                per_target[target] = per_target.get(target, 0) + 1
    return {
        "count": count,
        "targets": tuple(sorted(per_target.items())),
        "sample": tuple(sample),
        "invalid": tuple(invalid),
        "invalid_count": invalid_count,
        "seen": seen,
    }


def execute_replay(plan, *, skip_invalid=False, batch_size=500, on_progress=None, should_stop=None):
    """Copy a plan's records to their targets and return a types.ReplayResult.

    Sends nothing and raises UnreplayableRecords if the plan lists records that cannot be replayed,
    unless skip_invalid (then they are left out and counted). Reads batch_size records of one
    source partition at a time, in offset order, and appends them per target partition in that
    order, each append through an idempotent producer: a batch resent after a dropped connection is
    stored once. After each batch, on_progress(done, partition, offset) is called with the count of
    records handled so far and the last offset handled; should_stop() is asked before each batch,
    and a True ends the replay early (result.stopped). A replay that ends early or fails can be
    continued from the offset after the last one replayed; a failure inside a batch may have
    stored part of that batch, so at most one batch is copied twice.
    """
    check_plan(plan, skip_invalid=skip_invalid)
    info = topics.get_topic(plan.source)
    targets = _Targets(plan.source, topics.get_topic(plan.to_topic) if plan.to_topic is not None else None,
                       redrive=plan.to_topic is None and not plan.all_groups)
    sender = producer.Producer(idempotent=True, client_id=f"replay:{plan.source}"[:255])
    selection = {"ranges": plan.ranges, "since": plan.since, "until": plan.until, "key": plan.key, "limit": plan.limit}
    done = replayed = skipped = 0
    last = {}
    stopped = False
    for partition, rows in _batches(info.id, selection, storage.read_replay_range, batch_size):
        if should_stop is not None and should_stop():
            stopped = True
            break
        by_target, left_out = _copies(plan.source, targets, partition, rows, skip_invalid)
        for target, records in by_target.items():
            _append(sender, targets.topic(target.topic), target.partition, records)
            replayed += len(records)
        skipped += left_out
        done += len(rows)
        last[partition] = rows[-1][0]
        if on_progress is not None:
            on_progress(done, partition, rows[-1][0])
    return types.ReplayResult(replayed=replayed, skipped=skipped, last=tuple(sorted(last.items())), stopped=stopped)


def _copies(source, targets, partition, rows, skip_invalid):
    """Return ({TopicPartition: [OutgoingRecord]} in offset order, how many were left out) for a batch."""
    by_target, left_out = {}, 0
    for offset, key, value, value_format, headers in rows:
        target, problem = targets.resolve(partition, key, headers, len(value or b""))
        if problem:
            # Planned as valid, invalid now (its target topic was deleted since, say).
            if not skip_invalid:
                raise exceptions.UnreplayableRecords(
                    topic=source, count=1, records=((partition, offset, problem),), part_way=True
                )
            left_out += 1
            continue
        group = (headers or {}).get(types.DLQ_GROUP) if targets.redrive else None
        headers = replay_headers(headers, source=source, partition=partition, offset=offset, target=target.topic,
                                 group=group)
        copy = types.OutgoingRecord(key=key, value=value, value_format=value_format, headers=headers)
        by_target.setdefault(target, []).append(copy)
    return by_target, left_out


def check_plan(plan, *, skip_invalid=False):
    """Raise UnreplayableRecords if the plan lists records that cannot be replayed, unless skip_invalid."""
    if plan.invalid_count and not skip_invalid:
        raise _unreplayable(plan.source, plan.invalid, plan.invalid_count)


def replay_headers(headers, *, source, partition, offset, target, group=None):
    """Return the headers of the copy of source-partition@offset sent to topic target (for group
    only, when group is given)."""
    copied = dict(headers or {})
    if copied.get(types.DLQ_ORIGINAL_TOPIC) == target:
        for name in DLQ_HEADERS:
            copied.pop(name, None)
    copied.pop(types.REDRIVE_GROUP, None)
    if group:
        copied[types.REDRIVE_GROUP] = group
    copied[types.REPLAY_ORIGIN] = f"{source}-{partition}@{offset}"
    return copied


def _append(sender, info, partition, records):
    # Copies keep their value format and carry headers of their own, so they go through
    # Producer.append, with the idempotence (producer id and sequence, resend on a dropped
    # connection) that send_batch has.
    sender.append(info, partition, records)


class _Targets:
    """Where each record goes; caches the topics it looks up for one plan or run."""

    def __init__(self, source, fixed, *, redrive=False):
        self.source = source
        self.fixed = fixed
        self.redrive = redrive
        self._topics = {} if fixed is None else {fixed.name: fixed}

    def topic(self, name):
        """Return the TopicInfo of name, or None if there is no such topic."""
        if name not in self._topics:
            try:
                self._topics[name] = topics.get_topic(name)
            except exceptions.TopicNotFound:
                self._topics[name] = None
        return self._topics[name]

    def resolve(self, partition, key, headers, value_size):
        """Return (TopicPartition, "") for a record, or (None, why it cannot be replayed)."""
        headers = headers or {}
        info = self.fixed
        if info is None:
            name = headers.get(types.DLQ_ORIGINAL_TOPIC)
            if not name:
                return None, f"no {types.DLQ_ORIGINAL_TOPIC} header: not a dead letter"
            info = self.topic(name)
            if info is None:
                return None, f"its original topic {name!r} does not exist"
            if self.redrive and not headers.get(types.DLQ_GROUP):
                return None, f"no {types.DLQ_GROUP} header: no group to redrive it to (all groups: all_groups)"
        size = value_size + len(key or b"")
        if size > info.max_message_bytes:
            return None, f"{size} bytes, more than topic {info.name!r} accepts ({info.max_message_bytes})"
        return types.TopicPartition(topic=info.name, partition=self._partition(info, partition, key, headers)), ""

    @staticmethod
    def _partition(info, partition, key, headers):
        if key is not None:
            return partitioner.partition_for_key(key, info.partition_count)
        original = headers.get(types.DLQ_ORIGINAL_PARTITION, "")
        if headers.get(types.DLQ_ORIGINAL_TOPIC) == info.name and original.isdigit():
            if int(original) < info.partition_count:
                return int(original)
        return partition % info.partition_count


def _batches(topic_id, selection, read, batch_size):
    """Yield (partition, rows) of the selection, partition by partition in offset order, until the
    selection's limit is reached; rows are read batch_size at a time."""
    left = selection["limit"]
    for partition, start, end in selection["ranges"]:
        position = start
        while position < end and (left is None or left > 0):
            size = batch_size if left is None else min(batch_size, left)
            rows = read(
                topic_id=topic_id, partition=partition, position=position, end=end,
                since=selection["since"], until=selection["until"], key=selection["key"], limit=size,
            )
            if not rows:
                break
            if left is not None:
                left -= len(rows)
            position = rows[-1][0] + 1
            yield partition, rows


def _ranges(info, partitions, from_offset, to_offset, since, offsets):
    """Return ((partition, first offset, end offset), ...) to read, skipping empty ranges."""
    if offsets:
        wanted = sorted({p for p, _ in offsets})
    else:
        wanted = sorted(set(partitions)) if partitions else list(range(info.partition_count))
    bounds = {row[0]: row[1:] for row in storage.replay_bounds(topic_id=info.id, partitions=wanted, since=since)}
    for number in wanted:
        if number not in bounds:
            raise exceptions.PartitionNotFound(topic=info.name, partition=number)
    if offsets:
        for partition, offset in offsets:
            start, end, _ = bounds[partition]
            if not start <= offset < end:
                raise exceptions.RecordNotFound(topic=info.name, partition=partition, offset=offset)
        return tuple((p, o, o + 1) for p, o in sorted(set(offsets)))
    ranges = []
    for number in wanted:
        start, end, first_since = bounds[number]
        if since is not None:
            if first_since is None:
                continue
            start = max(start, first_since)
        start = max(start, from_offset or 0)
        end = end if to_offset is None else min(end, to_offset)
        if start < end:
            ranges.append((number, start, end))
    return tuple(ranges)


def _check(to_topic, to_original, partitions, from_offset, to_offset, since, until, key, offsets, limit):
    def invalid(reason):
        return exceptions.InvalidArgument(reason=reason)

    if (to_topic is None) == (not to_original):
        raise invalid("choose one target: to_topic, or to_original for dead letters")
    if to_topic is not None:
        topics.validate_name(to_topic)
    if offsets and any(v is not None for v in (partitions or None, from_offset, to_offset, since, until, key)):
        raise invalid("single records (offsets) name their partitions and combine with no other selection")
    for partition, offset in offsets or ():
        if not _whole(partition) or not _whole(offset):
            raise invalid(f"offsets are (partition, offset) pairs, each 0 or more, not ({partition!r}, {offset!r})")
    for name, value in (("from_offset", from_offset), ("to_offset", to_offset)):
        if value is not None and not _whole(value):
            raise invalid(f"{name} must be 0 or more, not {value!r}")
    if from_offset is not None and to_offset is not None and from_offset >= to_offset:
        raise invalid(f"from_offset {from_offset} must be below to_offset {to_offset} (the end is exclusive)")
    if since is not None and until is not None and since >= until:
        raise invalid(f"since {since.isoformat()} must be before until {until.isoformat()}")
    if any(not _whole(p) for p in partitions or ()):
        raise invalid("partitions must be numbers 0 or more")
    if limit is not None and (not _whole(limit) or limit < 1):
        raise invalid(f"limit must be at least 1, not {limit!r}")


def _whole(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _aware(moment):
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=datetime.UTC)


def _unreplayable(source, rows, count):
    return exceptions.UnreplayableRecords(
        topic=source, count=count, records=tuple((r.partition, r.offset, r.problem) for r in rows)
    )
