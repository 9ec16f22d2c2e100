"""Raw SQL of retention and compaction: the log's time segments, log starts, reclaimed space."""
from django.db import connection
from psycopg import sql as psql

from queueing.sql import queries
from queueing.storage.log import cursor, run

DEFAULT = "queueing_record_default"


def _run_on(name, segment, params=None, **literals):
    """Run a named query aimed at one segment table (and DDL literals, which cannot be bound)."""
    query = psql.SQL(queries[name]).format(
        segment=psql.Identifier(segment), **{k: psql.Literal(v) for k, v in literals.items()}
    )
    with connection.wrap_database_errors:
        return cursor().execute(query, params)


def try_lock_pass():
    """Take the retention pass's session lock if no other process holds it; return whether taken."""
    return run(cursor(), "try_lock_pass", {}).fetchone()[0]


def unlock_pass():
    run(cursor(), "unlock_pass", {})


def set_lock_timeout(ms):
    """Bound lock waits for the rest of the caller's transaction."""
    run(cursor(), "set_lock_timeout", {"ms": int(ms)})


def segments():
    """[(name, start, end)] of the log's time segments, oldest first (the default excluded)."""
    return [tuple(row) for row in run(cursor(), "segments", {}).fetchall()]


def default_has_rows(start, end):
    return run(cursor(), "default_has_rows", {"start": start, "end": end}).fetchone()[0]


def create_segment(name, start, end):
    """Create the segment [start, end) if it is missing (caller's transaction, with its lock timeout)."""
    _run_on("create_segment", name, start=start.isoformat(), end=end.isoformat())


def lock_segment(name):
    _run_on("lock_segment", name)


def segment_still_needed(name):
    """True if the segment holds a record at or above its partition's log start."""
    return _run_on("segment_still_needed", name).fetchone()[0]


def drop_segment(name):
    _run_on("drop_segment", name)


def expired_in_segment(name):
    """[(topic_id, partition, log start, lowest offset below it)] for one segment."""
    return _run_on("expired_in_segment", name).fetchall()


def delete_expired(name, *, topic_id, partition, first, last):
    """Delete a partition's records with offsets in [first, last) from one segment; return how many."""
    params = {"topic_id": topic_id, "partition": partition, "first": first, "last": last}
    return _run_on("delete_expired", name, params).rowcount


def first_offset_since(*, topic_id, partition, start, cutoff):
    """The first offset from start stamped at or after cutoff, or None."""
    row = run(cursor(), "first_offset_since",
              {"topic_id": topic_id, "partition": partition, "start": start, "cutoff": cutoff}).fetchone()
    return None if row is None else row[0]


def first_offset_within_size(*, topic_id, partition, start, end, excess):
    """(new start, bytes freed) that frees at least excess bytes, or (end, all the bytes) if the
    records from start cannot free that much."""
    row = run(cursor(), "first_offset_within_size", {
        "topic_id": topic_id, "partition": partition, "start": start, "end": end, "excess": excess,
    }).fetchone()
    if row is not None:
        return row[0], row[1]
    return end, bytes_between(topic_id=topic_id, partition=partition, first=start, last=end)


def bytes_between(*, topic_id, partition, first, last):
    return run(cursor(), "bytes_between",
               {"topic_id": topic_id, "partition": partition, "first": first, "last": last}).fetchone()[0]


def advance_log_start(*, topic_id, partition, old_start, start, freed):
    """Move the log start from old_start to start, taking freed bytes off the size; return False,
    changing nothing, if the log start is no longer old_start."""
    return run(cursor(), "advance_log_start", {
        "topic_id": topic_id, "partition": partition, "old_start": old_start, "start": start, "bytes": freed,
    }).fetchone() is not None


def compact_partition(*, topic_id, partition, log_start, dirty_end, hot_start, tombstones_before):
    """Run one compaction pass over a partition and fix its size, in the caller's transaction;
    return the number of records removed."""
    cur = cursor()
    removed, freed = run(cur, "compact_partition", {
        "topic_id": topic_id, "partition": partition, "log_start": log_start, "dirty_end": dirty_end,
        "hot_start": hot_start, "tombstones_before": tombstones_before,
    }).fetchone()
    if freed:
        run(cur, "take_off_size", {"topic_id": topic_id, "partition": partition, "bytes": freed})
    return removed


def lock_pass_for_transaction():
    """Wait for the retention pass's lock and hold it until the caller's transaction ends."""
    run(cursor(), "lock_pass_for_transaction", {})


def lock_partition_bounds(*, topic_id, partition):
    """Lock a partition's row (the append lock) for the caller's transaction; return (log start, log end)."""
    return tuple(run(cursor(), "lock_partition_bounds", {"topic_id": topic_id, "partition": partition}).fetchone())


def delete_records_below(*, topic_id, partition, before):
    """Delete a partition's records with offsets below before from every segment; return how many."""
    return run(cursor(), "delete_records_below",
               {"topic_id": topic_id, "partition": partition, "before": before}).rowcount
