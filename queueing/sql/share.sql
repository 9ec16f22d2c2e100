-- Share groups (KIP-932): acquisition with locks, per-record acknowledgement. Each section is run
-- by the storage function of the same name in storage/share.py. The work of a poll is done by the
-- PL/pgSQL function sluice_share_poll (sql/functions/share_v1.sql), one round trip per partition.

-- name: ensure_share_partitions --
-- Give a share group a window on every partition of a topic, starting at the log start or end.
INSERT INTO queueing_sharepartition (group_id, topic_id, partition, start_offset, acquire_offset)
SELECT %(group_id)s, p.topic_id, p.number,
       CASE WHEN %(earliest)s THEN p.log_start_offset ELSE p.next_offset END,
       CASE WHEN %(earliest)s THEN p.log_start_offset ELSE p.next_offset END
  FROM queueing_partition p
 WHERE p.topic_id = %(topic_id)s
    ON CONFLICT (group_id, topic_id, partition) DO NOTHING

-- name: share_poll --
-- Accept what the member finished on one partition and acquire its next records (see the function).
-- set_config(..., true) sets this transaction's commit level (commit_level NULL: the session's).
SELECT kind, record_offset, delivery_count, previous_member, key, value, value_format, headers, record_timestamp
  FROM (SELECT set_config('synchronous_commit',
                          coalesce(%(commit_level)s, current_setting('synchronous_commit')), true)) AS level,
       sluice_share_poll(%(group_id)s, %(topic_id)s, %(partition)s, %(member_id)s, %(limit)s, %(lock_ms)s,
                         %(delivery_limit)s, %(accept)s::bigint[], %(accept_counts)s::int[])

-- name: share_split --
-- Turn the member's ranges that cover these offsets into single records, before per-record fates.
SELECT sluice_share_split(%(group_id)s, %(topic_id)s, %(partition)s, %(member_id)s, %(offsets)s::bigint[])

-- name: claim_dead --
-- Take a range past the delivery limit out of the window, to dead-letter it in this transaction.
-- The conditions are those under which sluice_share_poll reported it; if another member got there
-- first, nothing is returned.
DELETE FROM queueing_sharedelivery
 WHERE group_id = %(group_id)s AND topic_id = %(topic_id)s AND partition = %(partition)s
   AND "offset" = %(offset)s AND delivery_count >= %(delivery_limit)s
   AND ((state = 2 AND available_at <= now()) OR (state = 1 AND lock_until < now()))
RETURNING "offset", last_offset, delivery_count

-- name: records_between --
-- The records of one partition from first to last, in offset order.
SELECT "offset", key, value, value_format, headers, timestamp
  FROM queueing_record
 WHERE topic_id = %(topic_id)s AND partition = %(partition)s AND "offset" BETWEEN %(first)s AND %(last)s
 ORDER BY "offset"

-- name: finish_deliveries --
-- Remove single-record rows this member holds (split first). The delivery count is the fencing
-- token: a record re-acquired since (by anyone) is not touched, so the late acknowledgement is
-- refused. The row lock waits for a concurrent acquisition, then re-checks.
DELETE FROM queueing_sharedelivery d
 USING unnest(%(topic_ids)s::bigint[], %(partitions)s::int[], %(offsets)s::bigint[], %(counts)s::int[])
       AS a(topic_id, partition, "offset", delivery_count)
 WHERE d.group_id = %(group_id)s AND d.topic_id = a.topic_id AND d.partition = a.partition
   AND d."offset" = a."offset" AND d.last_offset = a."offset" AND d.state = 1 AND d.member_id = %(member_id)s
   AND d.delivery_count = a.delivery_count
RETURNING d.topic_id, d.partition, d."offset"

-- name: finish_ranges --
-- Remove the ranges this member holds whose every record is among the items, with the range's
-- delivery count: a batch accepted whole goes as one row, without a split. Fenced as
-- finish_deliveries (a range re-acquired since has another count and is left alone). The items'
-- offsets are distinct.
DELETE FROM queueing_sharedelivery d
 WHERE d.group_id = %(group_id)s AND d.state = 1 AND d.member_id = %(member_id)s AND d.last_offset > d."offset"
   AND (d.topic_id, d.partition, d."offset") IN (
       SELECT a.topic_id, a.partition, a."offset"
         FROM unnest(%(topic_ids)s::bigint[], %(partitions)s::int[], %(offsets)s::bigint[]) AS a(topic_id, partition, "offset"))
   AND (SELECT count(*)
          FROM unnest(%(topic_ids)s::bigint[], %(partitions)s::int[], %(offsets)s::bigint[], %(counts)s::int[])
               AS a(topic_id, partition, "offset", delivery_count)
         WHERE a.topic_id = d.topic_id AND a.partition = d.partition AND a.delivery_count = d.delivery_count
           AND a."offset" BETWEEN d."offset" AND d.last_offset) = d.last_offset - d."offset" + 1
RETURNING d.topic_id, d.partition, d."offset", d.last_offset

-- name: release_deliveries --
-- Make held single-record rows available again, each after its own delay (fenced as above).
UPDATE queueing_sharedelivery d
   SET state = 2, member_id = NULL, lock_until = NULL,
       available_at = now() + a.delay_ms * interval '1 millisecond'
  FROM unnest(%(topic_ids)s::bigint[], %(partitions)s::int[], %(offsets)s::bigint[], %(counts)s::int[],
              %(delays_ms)s::bigint[]) AS a(topic_id, partition, "offset", delivery_count, delay_ms)
 WHERE d.group_id = %(group_id)s AND d.topic_id = a.topic_id AND d.partition = a.partition
   AND d."offset" = a."offset" AND d.last_offset = a."offset" AND d.state = 1 AND d.member_id = %(member_id)s
   AND d.delivery_count = a.delivery_count
RETURNING d.topic_id, d.partition, d."offset"

-- name: renew_deliveries --
-- Extend the locks of the held rows (ranges or single records) that cover these records.
UPDATE queueing_sharedelivery d
   SET lock_until = now() + %(lock_ms)s * interval '1 millisecond'
  FROM (SELECT DISTINCT d2.topic_id, d2.partition, d2."offset"
          FROM unnest(%(topic_ids)s::bigint[], %(partitions)s::int[], %(offsets)s::bigint[], %(counts)s::int[])
               AS a(topic_id, partition, "offset", delivery_count)
          JOIN queueing_sharedelivery d2
            ON d2.group_id = %(group_id)s AND d2.topic_id = a.topic_id AND d2.partition = a.partition
           AND a."offset" BETWEEN d2."offset" AND d2.last_offset
           AND d2.state = 1 AND d2.member_id = %(member_id)s AND d2.delivery_count = a.delivery_count) held
 WHERE d.group_id = %(group_id)s AND d.topic_id = held.topic_id AND d.partition = held.partition
   AND d."offset" = held."offset"
RETURNING d.topic_id, d.partition, d."offset", d.last_offset

-- name: defer_deliveries --
-- Hand held single-record rows back, each after its own delay, without counting the delivery: the
-- count goes back to what it was before this acquisition, so the next one gives the same count
-- (for a member that acquired a record it may not run yet: a limit, not a failure). Fenced as
-- release_deliveries.
UPDATE queueing_sharedelivery d
   SET state = 2, member_id = NULL, lock_until = NULL, delivery_count = d.delivery_count - 1,
       available_at = now() + a.delay_ms * interval '1 millisecond'
  FROM unnest(%(topic_ids)s::bigint[], %(partitions)s::int[], %(offsets)s::bigint[], %(counts)s::int[],
              %(delays_ms)s::bigint[]) AS a(topic_id, partition, "offset", delivery_count, delay_ms)
 WHERE d.group_id = %(group_id)s AND d.topic_id = a.topic_id AND d.partition = a.partition
   AND d."offset" = a."offset" AND d.last_offset = a."offset" AND d.state = 1 AND d.member_id = %(member_id)s
   AND d.delivery_count = a.delivery_count
RETURNING d.topic_id, d.partition, d."offset"

-- name: expedite_deliveries --
-- Make handed-back records that wait for their delay available now (a slot they wait for freed).
-- Records held by a member, or already available, are left alone.
UPDATE queueing_sharedelivery d
   SET available_at = now()
  FROM unnest(%(topic_ids)s::bigint[], %(partitions)s::int[], %(offsets)s::bigint[]) AS a(topic_id, partition, "offset")
 WHERE d.group_id = %(group_id)s AND d.topic_id = a.topic_id AND d.partition = a.partition
   AND d."offset" = a."offset" AND d.state = 2 AND d.available_at > now()
RETURNING d.topic_id, d.partition, d."offset"
