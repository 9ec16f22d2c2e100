"""Retention and compaction: log starts move by time and size, old segments are dropped whole, and
compacted topics keep the newest record per key.

The log (queueing_record) is partitioned by timestamp into segments of SLUICE["SEGMENT_MS"], plus
a DEFAULT partition that takes whatever no segment covers so an append never fails. Retention
only moves a partition's log start (readers never see below it); the space comes back when a
closed segment holds nothing any partition still needs and is dropped whole, or, where a segment
still holds records of long-lived topics, by deleting its expired records in batches. The segment
appends go to is never dropped and never has rows deleted, so the hot table gains no dead tuples.
"""
import dataclasses
import datetime
import logging
import time

from django.conf import settings
from django.db import OperationalError, transaction

from queueing import exceptions, groups, loops, models, retries, topics
from queueing.storage import retention as storage

logger = logging.getLogger("sluice.retention")

AHEAD = 2  # segments kept ready beyond the current one, so a missed pass or two costs nothing
EPOCH = datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)  # segment boundaries are multiples of the span from here
DELETE_BATCH = 10_000  # records per delete statement (one short transaction each)
DELETE_BUDGET = 100  # delete statements per pass; the loop comes back at once for the rest


def _setting(name, default):
    return settings.SLUICE.get(name, default)


def segment_span():
    return datetime.timedelta(milliseconds=_setting("SEGMENT_MS", 24 * 3600 * 1000))


def segment_name(start):
    return f"queueing_record_s{start.astimezone(datetime.UTC):%Y%m%d%H%M%S}"


def _aligned(moment, span):
    return EPOCH + ((moment - EPOCH) // span) * span


def _lock_timeout_ms():
    return _setting("RETENTION_LOCK_TIMEOUT_MS", 200)


@dataclasses.dataclass(frozen=True, kw_only=True)
class PassResult:
    """What one retention pass did; skipped: another process was running a pass."""

    segments_created: int = 0
    log_starts_moved: int = 0
    segments_dropped: int = 0
    records_deleted: int = 0
    records_compacted: int = 0
    groups_expired: int = 0
    more: bool = False
    skipped: bool = False


def hot_start(now, existing=None):
    """The start of the segment appends go to now: nothing from there on is dropped or deleted."""
    existing = storage.segments() if existing is None else existing
    for _, start, end in existing:
        if start <= now < end:
            return start
    return _aligned(now, segment_span())


def ensure_segments(now=None):
    """Create the current segment and AHEAD more, so appends land in segments, not the default;
    return how many were created.

    Creating a segment takes an exclusive lock on the log for an instant (a catalog change, and a
    scan of the empty default partition); under the lock timeout a busy log makes it give up until
    the next pass rather than queue appends behind it, which is why segments are made ahead.
    """
    now = now or groups.db_now()
    span = segment_span()
    existing = storage.segments()
    cursor = _aligned(now, span)
    horizon = cursor + (AHEAD + 1) * span
    created = 0
    while cursor < horizon:
        covering = next((end for _, start, end in existing if start <= cursor < end), None)
        if covering is not None:
            cursor = covering
            continue
        # Never overlap a later segment (one made with another span, say): end where it starts.
        end = min([cursor + span] + [start for _, start, _ in existing if start > cursor])
        if storage.default_has_rows(cursor, end):
            # Appends went to the default partition (no pass ran for a while): those records are
            # reclaimed row by row, and this time gets its segment once they are gone.
            logger.warning("segment %s not created: the default partition holds records of its time",
                           segment_name(cursor))
        else:
            try:
                with transaction.atomic():
                    storage.set_lock_timeout(_lock_timeout_ms())
                    storage.create_segment(segment_name(cursor), cursor, end)
            except OperationalError as error:
                logger.warning("segment %s not created this pass (%s)", segment_name(cursor), error)
                break
            created += 1
            logger.info("created segment %s (%s to %s)", segment_name(cursor), cursor, end)
        cursor = end
    return created


def apply_retention(now=None):
    """Advance log starts past records older than retention_ms and beyond retention_bytes; return
    how many partitions moved.

    Each move is one compare-and-set UPDATE of the partition row (the append lock, held for that
    statement only); records are not touched here, and readers never see below the log start.
    """
    now = now or groups.db_now()
    moved = 0
    parts = (
        models.Partition.objects.select_related("topic")
        .exclude(topic__retention_ms__isnull=True, topic__retention_bytes__isnull=True)
        .order_by("topic_id", "number")
    )
    for part in parts:
        topic, old, end = part.topic, part.log_start_offset, part.next_offset
        where = {"topic_id": topic.id, "partition": part.number}
        start = old
        if topic.retention_ms:
            cutoff = now - datetime.timedelta(milliseconds=topic.retention_ms)
            found = storage.first_offset_since(**where, start=old, cutoff=cutoff)
            # end was read before the search: records appended since are newer than the cutoff.
            start = end if found is None else found
        freed = storage.bytes_between(**where, first=old, last=start) if start > old else 0
        if topic.retention_bytes and part.size_bytes - freed > topic.retention_bytes:
            start, more = storage.first_offset_within_size(
                **where, start=start, end=end, excess=part.size_bytes - freed - topic.retention_bytes
            )
            freed += more
        if start > old and storage.advance_log_start(**where, old_start=old, start=start, freed=freed):
            moved += 1
            logger.info("%s-%d: log start %d -> %d (%d bytes)", topic.name, part.number, old, start, freed,
                        extra={"topic": topic.name, "partition": part.number, "log_start_offset": start})
    return moved


def _drop(name):
    """Drop a segment if nothing in it is needed; return whether it went.

    DROP TABLE of a partition takes an ACCESS EXCLUSIVE lock on the whole log for a catalog change
    of a few milliseconds, reading no rows. It does not block producers: they append to the current
    segment, which is never dropped, so no append holds this segment; the lock timeout bounds how
    long appends can queue behind the DROP waiting for a long transaction that reads the log, and on
    timeout nothing happens until the next pass. (DETACH ... CONCURRENTLY would take a weaker lock,
    but PostgreSQL refuses it while a DEFAULT partition exists.) The lock timeout is also shorter
    than deadlock_timeout, so when an append that started before the segment closed waits on our
    SHARE lock while we wait on it, we are the one that gives way.
    """
    try:
        with transaction.atomic():
            storage.set_lock_timeout(_lock_timeout_ms())
            storage.lock_segment(name)
            # Checked again under the lock: a late append may have landed since the first look.
            if storage.segment_still_needed(name):
                return False
            storage.drop_segment(name)
    except OperationalError as error:
        logger.info("segment %s not dropped this pass (%s)", name, error)
        return False
    return True


def _delete_expired(name, batch, budget):
    """Delete expired records from one segment in offset-range batches; return (deleted, statements)."""
    deleted = statements = 0
    for topic_id, partition, start, first in storage.expired_in_segment(name):
        while first < start and statements < budget:
            last = min(start, first + batch)
            deleted += storage.delete_expired(name, topic_id=topic_id, partition=partition, first=first, last=last)
            statements += 1
            first = last
    return deleted, statements


def reclaim(now=None, *, batch=DELETE_BATCH, budget=DELETE_BUDGET):
    """Give back the space of records below their log start; return (segments dropped, records
    deleted, whether the delete budget ran out before the work did).

    A closed segment nobody needs is dropped whole; a closed segment that still holds records of
    longer-lived topics, and the default partition, lose only their expired records. The current
    segment and those ahead are never touched.
    """
    now = now or groups.db_now()
    dropped = deleted = statements = 0
    for name, start, end in storage.segments():
        if end > now:
            continue  # the segment appends go to, and the ones made ahead
        if not storage.segment_still_needed(name) and _drop(name):
            dropped += 1
            logger.info("dropped segment %s (%s to %s)", name, start, end, extra={"segment": name})
            continue
        gone, used = _delete_expired(name, batch, budget - statements)
        deleted, statements = deleted + gone, statements + used
    gone, used = _delete_expired(storage.DEFAULT, batch, budget - statements)
    deleted, statements = deleted + gone, statements + used
    return dropped, deleted, statements >= budget


def compact(now=None):
    """Run one compaction pass over every partition of every compacted topic; return the records
    removed. Each partition is one transaction; it holds the partition row (the append lock) only
    for the closing size update."""
    now = now or groups.db_now()
    head = hot_start(now)
    tombstones_before = now - datetime.timedelta(milliseconds=_setting("TOMBSTONE_RETENTION_MS", 24 * 3600 * 1000))
    removed = 0
    parts = models.Partition.objects.select_related("topic").filter(
        topic__cleanup_policy=models.Topic.CleanupPolicy.COMPACT
    ).order_by("topic_id", "number")
    for part in parts:
        with transaction.atomic():
            count = storage.compact_partition(
                topic_id=part.topic_id, partition=part.number, log_start=part.log_start_offset,
                dirty_end=part.next_offset, hot_start=head,
                tombstones_before=tombstones_before,
            )
        if count:
            logger.info("%s-%d: compaction removed %d record(s)", part.topic.name, part.number, count,
                        extra={"topic": part.topic.name, "partition": part.number, "removed": count})
        removed += count
    return removed


def run_pass(now=None, *, batch=DELETE_BATCH, budget=DELETE_BUDGET):
    """One pass: segments ahead, log starts, space, compaction. Only one process runs a pass at a
    time; another finds it taken and returns PassResult(skipped=True)."""
    if not storage.try_lock_pass():
        return PassResult(skipped=True)
    try:
        created = ensure_segments(now)
        moved = apply_retention(now)
        dropped, deleted, more = reclaim(now, batch=batch, budget=budget)
        compacted = compact(now)
        expired = groups.expire_console_groups()
    finally:
        storage.unlock_pass()
    return PassResult(segments_created=created, log_starts_moved=moved, segments_dropped=dropped,
                      records_deleted=deleted, records_compacted=compacted, groups_expired=expired, more=more)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Deletion:
    """What delete_records did to one partition: its log start before and after, records deleted."""

    partition: int
    old_start: int
    new_start: int
    deleted: int


def delete_records(topic, *, before=None, partitions=None, any_topic=False):
    """Delete a topic's records below an offset, as Kafka's DeleteRecords: each partition's log
    start moves up to the offset and the records below it are deleted; offsets above stay as they
    were. before: an offset, {partition: offset}, or None for everything up to the log end;
    partitions: the partitions to touch (default every one). Return a Deletion per partition.

    One transaction, under the retention pass's lock and each partition's append lock (the locks
    retention and its log-start moves take), so no pass, compaction or append interleaves with it.
    A group whose committed offset falls below the new log start resets by its auto_offset_reset,
    as after retention. Only dead-letter topics, unless any_topic. Raises TopicNotFound,
    PartitionNotFound, NotADeadLetterTopic, OffsetOutOfRange, InvalidArgument.
    """
    info = topics.get_topic(topic)
    if not any_topic and not retries.is_dead_letter_topic(info.name):
        raise exceptions.NotADeadLetterTopic(name=info.name)
    numbers = sorted(set(range(info.partition_count) if partitions is None else partitions))
    for number in numbers + sorted(before if isinstance(before, dict) else ()):
        if not 0 <= number < info.partition_count:
            raise exceptions.PartitionNotFound(topic=info.name, partition=number)
    if isinstance(before, dict):
        numbers = sorted(set(numbers) & set(before))
    done = []
    with transaction.atomic():
        storage.lock_pass_for_transaction()
        for number in numbers:
            where = {"topic_id": info.id, "partition": number}
            old, end = storage.lock_partition_bounds(**where)
            wanted = before.get(number) if isinstance(before, dict) else before
            wanted = end if wanted is None else wanted
            if wanted < 0:
                raise exceptions.InvalidArgument(reason=f"offset {wanted} is negative")
            if wanted > end:
                raise exceptions.OffsetOutOfRange(topic=info.name, partition=number, offset=wanted, end=end)
            start = max(old, wanted)
            freed = storage.bytes_between(**where, first=old, last=start) if start > old else 0
            if start > old:
                storage.advance_log_start(**where, old_start=old, start=start, freed=freed)
            deleted = storage.delete_records_below(**where, before=start)
            done.append(Deletion(partition=number, old_start=old, new_start=start, deleted=deleted))
            logger.info("%s-%d: records deleted below %d (log start was %d, %d rows)", info.name, number,
                        start, old, deleted,
                        extra={"topic": info.name, "partition": number, "log_start_offset": start})
    return done


class Retainer(loops.Loop):
    """The retention loop: a pass every RETENTION_CHECK_MS, at once again while work is left. One
    is enough; more do no harm (they take turns). Signals, reconnection and shutdown: loops.Loop."""

    name = "retention"

    def __init__(self, *, interval=None, batch=DELETE_BATCH, budget=DELETE_BUDGET):
        super().__init__()
        self.interval = interval if interval is not None else _setting("RETENTION_CHECK_MS", 60_000) / 1000
        self.batch, self.budget = batch, budget
        self.last = None

    def run_once(self):
        """Run one pass; return True if more work is likely at once."""
        began = time.monotonic()
        self.last = run_pass(batch=self.batch, budget=self.budget)
        result = {**dataclasses.asdict(self.last), "seconds": round(time.monotonic() - began, 3)}
        logger.info("retention pass: %s", ", ".join(f"{k}={v}" for k, v in result.items()), extra=result)
        return self.last.more
