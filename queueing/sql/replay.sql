-- Replay's reads: bounded offset-range reads of one partition. They join no consumer group, so a
-- replay moves no group's offsets.

-- name: replay_bounds --
-- Each chosen partition's log bounds and, with since, its first offset stamped at or after since.
-- A replay fixes these when it is planned, so records appended while it runs (into its own topic,
-- say) are never read. The subquery walks the primary key in offset order and stops at the first
-- match, so it is exact even though timestamps are not strictly monotonic by offset.
SELECT p.number, p.log_start_offset, p.next_offset,
       (SELECT min(r."offset") FROM queueing_record r
         WHERE %(since)s::timestamptz IS NOT NULL
           AND r.topic_id = p.topic_id AND r.partition = p.number AND r.timestamp >= %(since)s)
  FROM queueing_partition p
 WHERE p.topic_id = %(topic_id)s AND p.number = ANY(%(partitions)s::int[])
 ORDER BY p.number

-- name: scan_replay_range --
-- Plan a replay: up to limit matching records of one partition in [position, end), in offset
-- order, without their values (a size and a short preview are enough to plan and to show).
SELECT r."offset", r.key, r.headers, coalesce(octet_length(r.value), 0), substring(r.value FROM 1 FOR 80)
  FROM queueing_record r
 WHERE r.topic_id = %(topic_id)s AND r.partition = %(partition)s
   AND r."offset" >= %(position)s AND r."offset" < %(end)s
   AND (%(since)s::timestamptz IS NULL OR r.timestamp >= %(since)s)
   AND (%(until)s::timestamptz IS NULL OR r.timestamp < %(until)s)
   AND (%(key)s::bytea IS NULL OR r.key = %(key)s)
 ORDER BY r."offset"
 LIMIT %(limit)s

-- name: read_replay_range --
-- Run a replay: the same selection as scan_replay_range, with the values to copy.
SELECT r."offset", r.key, r.value, r.value_format, r.headers
  FROM queueing_record r
 WHERE r.topic_id = %(topic_id)s AND r.partition = %(partition)s
   AND r."offset" >= %(position)s AND r."offset" < %(end)s
   AND (%(since)s::timestamptz IS NULL OR r.timestamp >= %(since)s)
   AND (%(until)s::timestamptz IS NULL OR r.timestamp < %(until)s)
   AND (%(key)s::bytea IS NULL OR r.key = %(key)s)
 ORDER BY r."offset"
 LIMIT %(limit)s
