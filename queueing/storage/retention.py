"""Raw SQL of retention and compaction: time segments of the log, log starts, compaction passes."""
import datetime
import re

from psycopg import sql
from django.db import connection

from queueing.storage.log import cursor, run

_BOUND = re.compile(r"FROM \('([^']+)'\) TO \('([^']+)'\)")
DEFAULT = "queueing_record_default"


def _time(text):
    return datetime.datetime.fromisoformat(text.replace(" ", "T", 1)).astimezone(datetime.UTC)


def segments():
    """[(name, start, end)] of the log's time segments, oldest first (the default partition excluded)."""
    rows = run(cursor(), "segments", {}).fetchall()
    found = []
    for name, bound in rows:
        match = _BOUND.search(bound or "")
        if match:
            found.append((name, _time(match.group(1)), _time(match.group(2))))
    return sorted(found, key=lambda s: s[1])


def default_has_rows(start, end):
    cur = cursor()
    cur.execute(
        sql.SQL('SELECT 1 FROM {} WHERE "timestamp" >= %s AND "timestamp" < %s LIMIT 1').format(sql.Identifier(DEFAULT)),
        [start, end])
    return cur.fetchone() is not None


def create_segment(name, start, end):
    with connection.wrap_database_errors:
        # DDL takes no bind parameters: the bounds go in as quoted literals.
        cursor().execute(
            sql.SQL("CREATE TABLE IF NOT EXISTS {} PARTITION OF queueing_record FOR VALUES FROM ({}) TO ({})").format(
                sql.Identifier(name), sql.Literal(start.isoformat()), sql.Literal(end.isoformat())))


def segment_still_needed(name):
    """True if the segment holds a record at or above its partition's log start."""
    cur = cursor()
    cur.execute(sql.SQL(
        "SELECT 1 FROM {} r JOIN queueing_partition p ON p.topic_id = r.topic_id AND p.number = r.partition "
        'WHERE r."offset" >= p.log_start_offset LIMIT 1').format(sql.Identifier(name)))
    return cur.fetchone() is not None


def drop_segment(name, lock_timeout_ms):
    """Detach and drop a segment (one short transaction). The DDL needs an exclusive lock on the
    log for an instant; lock_timeout bounds how long appends can queue behind it if a long
    transaction holds the log: on timeout nothing happens and the next pass tries again."""
    cur = cursor()
    with connection.wrap_database_errors:
        cur.execute("SET LOCAL lock_timeout = %s" % int(lock_timeout_ms))
        cur.execute(sql.SQL("ALTER TABLE queueing_record DETACH PARTITION {}").format(sql.Identifier(name)))
        cur.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))


def delete_expired(name, limit):
    """Delete up to limit records below their partition's log start from one segment (never the one
    appends go to); return how many went."""
    cur = cursor()
    with connection.wrap_database_errors:
        cur.execute(sql.SQL(
            "DELETE FROM {table} r USING (SELECT r2.topic_id, r2.partition, r2.\"offset\", r2.\"timestamp\" FROM {table} r2 "
            "LEFT JOIN queueing_partition p ON p.topic_id = r2.topic_id AND p.number = r2.partition "
            "WHERE p.topic_id IS NULL OR r2.\"offset\" < p.log_start_offset LIMIT %s) gone "
            "WHERE r.topic_id = gone.topic_id AND r.partition = gone.partition AND r.\"offset\" = gone.\"offset\" "
            "AND r.\"timestamp\" = gone.\"timestamp\"").format(table=sql.Identifier(name)), [limit])
        return cur.rowcount


def first_offset_since(*, topic_id, partition, start, cutoff):
    row = run(cursor(), "first_offset_since",
              {"topic_id": topic_id, "partition": partition, "start": start, "cutoff": cutoff}).fetchone()
    return None if row is None else row[0]


def first_offset_within_size(*, topic_id, partition, start, end, max_bytes):
    return run(cursor(), "first_offset_within_size", {"topic_id": topic_id, "partition": partition, "start": start,
                                                      "end": end, "max_bytes": max_bytes}).fetchone()[0]


def advance_log_start(*, topic_id, partition, old_start, start):
    """Move the log start to start, taking the bytes of [old_start, start) off the size."""
    cur = cursor()
    removed = run(cur, "bytes_between", {"topic_id": topic_id, "partition": partition, "first": old_start,
                                         "last": start}).fetchone()[0]
    run(cur, "advance_log_start", {"topic_id": topic_id, "partition": partition, "start": start,
                                   "bytes": removed})
    return removed


def compact_partition(*, topic_id, partition, dirty_end, tombstones_before):
    """Run one compaction pass; return (records removed, bytes removed)."""
    rows = run(cursor(), "compact_partition", {"topic_id": topic_id, "partition": partition, "dirty_end": dirty_end,
                                               "tombstones_before": tombstones_before}).fetchall()
    removed = sum(r[0] for r in rows)
    if rows:
        cursor().execute("UPDATE queueing_partition SET size_bytes = greatest(0, size_bytes - %s) "
                         "WHERE topic_id = %s AND number = %s", [removed, topic_id, partition])
    return len(rows), removed
