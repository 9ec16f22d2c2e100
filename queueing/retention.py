"""Retention and compaction: the log start moves by time and size, old segments are dropped whole,
compacted topics keep the newest record per key."""
import datetime
import logging

from django.conf import settings
from django.db import OperationalError, transaction
from django.utils import timezone

from queueing import loops, models
from queueing.storage import retention as storage

logger = logging.getLogger("sluice.retention")
AHEAD = 2  # segments kept ready beyond the current one


def segment_span():
    return datetime.timedelta(milliseconds=settings.SLUICE["SEGMENT_MS"])


def ensure_segments(now=None):
    """Create the current segment and the next ones, so appends land in segments, not the default."""
    span = segment_span()
    now = now or timezone.now()
    epoch = datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)
    first = epoch + ((now - epoch) // span) * span
    existing = storage.segments()
    created = 0
    for n in range(AHEAD + 1):
        start, end = first + n * span, first + (n + 1) * span
        if any(s < end and start < e for _, s, e in existing):
            continue
        if storage.default_has_rows(start, end):
            # Rows of that time already went to the default partition; they are cleaned row by row.
            logger.warning("not creating segment %s: the default partition holds rows of its time", start)
            continue
        storage.create_segment(f"queueing_record_s{start:%Y%m%d%H%M%S}", start, end)
        created += 1
    return created


def apply_retention(now=None):
    """Advance log starts past records older than retention_ms and beyond retention_bytes; return
    the number of partitions moved."""
    now = now or timezone.now()
    moved = 0
    for topic in models.Topic.objects.exclude(retention_ms__isnull=True, retention_bytes__isnull=True):
        for part in models.Partition.objects.filter(topic=topic):
            start = part.log_start_offset
            if topic.retention_ms:
                cutoff = now - datetime.timedelta(milliseconds=topic.retention_ms)
                found = storage.first_offset_since(topic_id=topic.id, partition=part.number, start=start,
                                                   cutoff=cutoff)
                start = part.next_offset if found is None else max(start, found)
            if topic.retention_bytes and part.size_bytes > topic.retention_bytes:
                start = max(start, storage.first_offset_within_size(
                    topic_id=topic.id, partition=part.number, start=start, end=part.next_offset,
                    max_bytes=topic.retention_bytes))
            if start > part.log_start_offset:
                with transaction.atomic():
                    storage.advance_log_start(topic_id=topic.id, partition=part.number,
                                              old_start=part.log_start_offset, start=start)
                logger.info("%s-%s: log start %d -> %d", topic.name, part.number, part.log_start_offset, start)
                moved += 1
    return moved


def reclaim(now=None, batch=10_000):
    """Drop old segments that hold nothing still needed; delete expired rows from the others and
    from the default partition. The segment appends go to is never touched. Returns (dropped, deleted)."""
    now = now or timezone.now()
    dropped = deleted = 0
    for name, start, end in storage.segments():
        if end > now:
            continue  # the current segment (and ones ahead): appends go there
        if not storage.segment_still_needed(name):
            try:
                with transaction.atomic():
                    storage.drop_segment(name, settings.SLUICE["RETENTION_LOCK_TIMEOUT_MS"])
                dropped += 1
                logger.info("dropped segment %s (%s to %s)", name, start, end)
            except OperationalError as error:
                logger.info("segment %s not dropped this time (%s)", name, error)
            continue
        deleted += _delete_batches(name, batch)
    deleted += _delete_batches(storage.DEFAULT, batch)
    return dropped, deleted


def _delete_batches(name, batch):
    total = 0
    while True:
        with transaction.atomic():
            removed = storage.delete_expired(name, batch)
        total += removed
        if removed < batch:
            return total


def compact(now=None):
    """One compaction pass over every compacted topic; return the records removed."""
    now = now or timezone.now()
    keep_tombstones = datetime.timedelta(milliseconds=settings.SLUICE["TOMBSTONE_RETENTION_MS"])
    removed = 0
    for topic in models.Topic.objects.filter(cleanup_policy=models.Topic.CleanupPolicy.COMPACT):
        for part in models.Partition.objects.filter(topic=topic):
            with transaction.atomic():
                count, _ = storage.compact_partition(topic_id=topic.id, partition=part.number,
                                                     dirty_end=part.next_offset, tombstones_before=now - keep_tombstones)
            removed += count
    return removed


def run_once():
    """One pass: segments ahead, log starts, space, compaction; return what it did."""
    created = ensure_segments()
    moved = apply_retention()
    dropped, deleted = reclaim()
    compacted = compact()
    return {"segments_created": created, "log_starts_moved": moved, "segments_dropped": dropped,
            "records_deleted": deleted, "records_compacted": compacted}


class Retainer(loops.Loop):
    """The retention loop: a pass every RETENTION_CHECK_MS; one is enough, more do no harm."""

    name = "retention"

    def __init__(self, interval=None):
        super().__init__()
        self.interval = interval if interval is not None else settings.SLUICE["RETENTION_CHECK_MS"] / 1000

    def run_once(self):
        result = run_once()
        logger.info("retention pass: %s", result, extra=result)
        return False
