-- Retention and compaction of the log. Each section is run by the function of the same name in
-- storage/retention.py.

-- name: segments --
-- The partitions of queueing_record with their bounds (the default's bound reads DEFAULT).
SELECT c.relname, pg_get_expr(c.relpartbound, c.oid)
  FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
 WHERE i.inhparent = 'queueing_record'::regclass
 ORDER BY c.relname

-- name: first_offset_since --
-- The first record of a partition stamped at or after the cutoff, walking up from the log start.
SELECT "offset" FROM queueing_record
 WHERE topic_id = %(topic_id)s AND partition = %(partition)s AND "offset" >= %(start)s
   AND "timestamp" >= %(cutoff)s
 ORDER BY "offset" LIMIT 1

-- name: first_offset_within_size --
-- The first offset from which the rest of the partition is at most max_bytes (key + value).
SELECT coalesce(min("offset"), %(end)s) FROM (
    SELECT "offset", sum(coalesce(octet_length(value), 0) + coalesce(octet_length(key), 0))
                     OVER (ORDER BY "offset" DESC ROWS UNBOUNDED PRECEDING) AS suffix
      FROM queueing_record
     WHERE topic_id = %(topic_id)s AND partition = %(partition)s AND "offset" >= %(start)s
) tail WHERE suffix <= %(max_bytes)s

-- name: bytes_between --
-- Key and value bytes of a partition's records in [first, last).
SELECT coalesce(sum(coalesce(octet_length(value), 0) + coalesce(octet_length(key), 0)), 0)
  FROM queueing_record
 WHERE topic_id = %(topic_id)s AND partition = %(partition)s AND "offset" >= %(first)s AND "offset" < %(last)s

-- name: advance_log_start --
-- Move the log start forward (never back) and take the removed bytes off the partition's size.
-- The row lock is the append lock: held for this one statement only.
UPDATE queueing_partition
   SET log_start_offset = %(start)s, size_bytes = greatest(0, size_bytes - %(bytes)s)
 WHERE topic_id = %(topic_id)s AND number = %(partition)s AND log_start_offset < %(start)s

-- name: compact_partition --
-- Keep the newest record per key below the dirty boundary (the head is never touched), and drop
-- tombstones (null values) older than their retention once nothing older is left for their key.
WITH ranked AS (
    SELECT "offset", "timestamp", value IS NULL AS tombstone,
           row_number() OVER (PARTITION BY key ORDER BY "offset" DESC) AS newer
      FROM queueing_record
     WHERE topic_id = %(topic_id)s AND partition = %(partition)s AND "offset" < %(dirty_end)s
       AND key IS NOT NULL
)
DELETE FROM queueing_record r
 USING ranked
 WHERE r.topic_id = %(topic_id)s AND r.partition = %(partition)s AND r."offset" = ranked."offset"
   AND r."timestamp" = ranked."timestamp"
   AND (ranked.newer > 1 OR (ranked.tombstone AND ranked."timestamp" < %(tombstones_before)s))
RETURNING coalesce(octet_length(r.value), 0) + coalesce(octet_length(r.key), 0)
