-- Retention and compaction of the log: its time segments, log starts, reclaimed space. Each section
-- is run by the function of the same name in storage/retention.py. {segment} stands for one
-- segment's table, filled in as a quoted identifier: DDL, and statements aimed at one leaf table,
-- cannot bind a table name.

-- name: try_lock_pass --
-- One retention pass at a time across processes (a session lock, held across the pass's short
-- transactions): two passes would both take the same bytes off a partition's size.
SELECT pg_try_advisory_lock(hashtext('sluice.retention'))

-- name: unlock_pass --
SELECT pg_advisory_unlock(hashtext('sluice.retention'))

-- name: set_lock_timeout --
-- For this transaction only: a DDL statement that cannot get its lock at once gives up after this
-- long instead of making every append queue behind it.
SELECT set_config('lock_timeout', %(ms)s::int || 'ms', true)

-- name: segments --
-- The log's time segments (the DEFAULT partition excluded), oldest first, with their bounds,
-- read back from the partition bound expression in this session's time zone.
SELECT name, lower_bound, upper_bound
  FROM (SELECT c.relname::text AS name,
               substring(pg_get_expr(c.relpartbound, c.oid) FROM 'FROM \(''([^'']+)''\)')::timestamptz AS lower_bound,
               substring(pg_get_expr(c.relpartbound, c.oid) FROM 'TO \(''([^'']+)''\)')::timestamptz AS upper_bound
          FROM pg_inherits i
          JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'queueing_record'::regclass) s
 WHERE lower_bound IS NOT NULL
 ORDER BY lower_bound

-- name: default_has_rows --
-- Whether the DEFAULT partition holds records of a time a new segment would cover (creating the
-- segment would then fail: PostgreSQL refuses a partition whose rows sit in the default).
SELECT EXISTS (SELECT 1 FROM queueing_record_default
                WHERE "timestamp" >= %(start)s AND "timestamp" < %(end)s)

-- name: create_segment --
-- A new time segment. With a DEFAULT partition PostgreSQL scans it (kept empty, so that is
-- instant) under an exclusive lock on the log, taken with set_lock_timeout.
CREATE TABLE IF NOT EXISTS {segment} PARTITION OF queueing_record FOR VALUES FROM ({start}) TO ({end})

-- name: lock_segment --
-- SHARE conflicts only with writers of this one segment (appends whose transaction started before
-- it closed): after this no record can arrive in it, so the check that follows stays true. Readers
-- are not held up.
LOCK TABLE {segment} IN SHARE MODE

-- name: segment_still_needed --
-- Whether a segment holds a record at or above its partition's log start: one primary-key probe
-- per partition of the engine, never a scan of the segment. (Records of deleted topics have no
-- partition row, and are not needed.)
SELECT EXISTS (
    SELECT 1 FROM queueing_partition p
     WHERE EXISTS (SELECT 1 FROM {segment} r
                    WHERE r.topic_id = p.topic_id AND r.partition = p.number
                      AND r."offset" >= p.log_start_offset))

-- name: drop_segment --
-- Drop a segment whole: a catalog change, no row is read or deleted, so it leaves no dead tuples.
DROP TABLE {segment}

-- name: expired_in_segment --
-- The partitions with records below their log start in one segment, each with its lowest such
-- offset (a primary-key probe per partition).
SELECT p.topic_id, p.number, p.log_start_offset, first."offset"
  FROM queueing_partition p
 CROSS JOIN LATERAL (
        SELECT r."offset" FROM {segment} r
         WHERE r.topic_id = p.topic_id AND r.partition = p.number AND r."offset" < p.log_start_offset
         ORDER BY r."offset"
         LIMIT 1) first

-- name: delete_expired --
-- Delete one batch, an offset range below the log start, from one old segment (a primary-key
-- range; never the segment appends go to, so the hot table gains no dead tuples).
DELETE FROM {segment}
 WHERE topic_id = %(topic_id)s AND partition = %(partition)s
   AND "offset" >= %(first)s AND "offset" < %(last)s

-- name: first_offset_since --
-- The first record of a partition stamped at or after the cutoff, walking up from the log start.
-- Segments wholly before the cutoff are pruned; timestamps are not strictly monotonic by offset,
-- so the walk stops at the first match rather than trusting min(timestamp).
SELECT "offset" FROM queueing_record
 WHERE topic_id = %(topic_id)s AND partition = %(partition)s AND "offset" >= %(start)s
   AND "timestamp" >= %(cutoff)s
 ORDER BY "offset"
 LIMIT 1

-- name: first_offset_within_size --
-- Where the log must start to free excess bytes (key + value, as size_bytes counts them): the
-- first offset after enough records, walking up from the log start, and the bytes freed. The sum
-- runs row by row, so the walk stops as soon as excess is covered. No row: not enough records.
SELECT freed."offset" + 1, freed.bytes
  FROM (SELECT "offset",
               sum(coalesce(octet_length(key), 0) + coalesce(octet_length(value), 0))
                   OVER (ORDER BY "offset" ROWS UNBOUNDED PRECEDING) AS bytes
          FROM queueing_record
         WHERE topic_id = %(topic_id)s AND partition = %(partition)s
           AND "offset" >= %(start)s AND "offset" < %(end)s) freed
 WHERE freed.bytes >= %(excess)s
 LIMIT 1

-- name: bytes_between --
-- Key and value bytes of a partition's records in [first, last).
SELECT coalesce(sum(coalesce(octet_length(key), 0) + coalesce(octet_length(value), 0)), 0)
  FROM queueing_record
 WHERE topic_id = %(topic_id)s AND partition = %(partition)s AND "offset" >= %(first)s AND "offset" < %(last)s

-- name: advance_log_start --
-- Move the log start from old_start to start and take the freed bytes off the size. The UPDATE
-- takes the partition row's lock, the append lock, for this one statement: an append in flight
-- finishes first, and appends only add to size_bytes, so neither loses the other's change. The
-- compare-and-set on old_start makes a stale plan (the start moved meanwhile) store nothing.
UPDATE queueing_partition
   SET log_start_offset = %(start)s, size_bytes = greatest(0, size_bytes - %(bytes)s)
 WHERE topic_id = %(topic_id)s AND number = %(partition)s
   AND log_start_offset = %(old_start)s AND %(start)s <= next_offset
RETURNING log_start_offset

-- name: compact_partition --
-- One compaction pass over a partition. Below the dirty end (the log end when the pass began, so
-- records arriving meanwhile are never judged) each key keeps its newest record; older ones go.
-- Only records of closed segments are deleted (timestamp < hot_start prunes the segment appends go
-- to), as Kafka never cleans the active segment. A tombstone (null value) itself goes once older
-- than tombstones_before, and only when every record of its key is in a closed segment, so no
-- older value of the key can outlive it. Returns the records removed and the bytes removed at or
-- above the log start (bytes below it were taken off when the log start moved).
WITH latest AS (
    SELECT key, max("offset") AS survivor, max("timestamp") AS newest
      FROM queueing_record
     WHERE topic_id = %(topic_id)s AND partition = %(partition)s AND "offset" < %(dirty_end)s
       AND key IS NOT NULL
     GROUP BY key
), gone AS (
    DELETE FROM queueing_record r
     USING latest
     WHERE r.topic_id = %(topic_id)s AND r.partition = %(partition)s AND r.key = latest.key
       AND r."offset" < %(dirty_end)s AND r."timestamp" < %(hot_start)s
       AND (r."offset" < latest.survivor
            OR (r.value IS NULL AND r."timestamp" < %(tombstones_before)s AND latest.newest < %(hot_start)s))
 RETURNING r."offset", coalesce(octet_length(r.key), 0) + coalesce(octet_length(r.value), 0) AS bytes
)
SELECT count(*), coalesce(sum(bytes) FILTER (WHERE "offset" >= %(log_start)s), 0) FROM gone

-- name: take_off_size --
-- Take bytes compaction removed off the partition's size (the append lock, for one statement).
UPDATE queueing_partition
   SET size_bytes = greatest(0, size_bytes - %(bytes)s)
 WHERE topic_id = %(topic_id)s AND number = %(partition)s

-- name: lock_pass_for_transaction --
-- The retention pass's lock, for the caller's transaction (delete_records): it waits for a pass in
-- progress to end, and a pass that starts meanwhile finds the lock taken and skips, so no pass can
-- take bytes off a partition (or compact records) that a deletion is removing.
SELECT pg_advisory_xact_lock(hashtext('sluice.retention'))

-- name: lock_partition_bounds --
-- The partition row's lock, the append lock, held to the end of the deletion's transaction: no
-- record is appended to the partition, and no log start moves, until the deletion commits.
SELECT log_start_offset, next_offset FROM queueing_partition
 WHERE topic_id = %(topic_id)s AND number = %(partition)s
   FOR UPDATE

-- name: delete_records_below --
-- Delete a partition's records below an offset from every segment (a primary-key range in each),
-- the segment appends go to included: an operator's deletion is rare and must free the records now.
DELETE FROM queueing_record
 WHERE topic_id = %(topic_id)s AND partition = %(partition)s AND "offset" < %(before)s
