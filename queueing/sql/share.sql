-- Share groups (KIP-932): acquisition with locks, per-record acknowledgement. Each section is run
-- by the storage function of the same name in storage/share.py.

-- name: ensure_share_partitions --
-- Give a share group a window on every partition of a topic, starting at the log start or end.
INSERT INTO queueing_sharepartition (group_id, topic_id, partition, start_offset, acquire_offset)
SELECT %(group_id)s, p.topic_id, p.number,
       CASE WHEN %(earliest)s THEN p.log_start_offset ELSE p.next_offset END,
       CASE WHEN %(earliest)s THEN p.log_start_offset ELSE p.next_offset END
  FROM queueing_partition p
 WHERE p.topic_id = %(topic_id)s
    ON CONFLICT (group_id, topic_id, partition) DO NOTHING

-- name: lock_share_partition --
-- Take a share partition for one acquisition. SKIP LOCKED: while another member is acquiring on
-- this partition, try another one instead of queueing behind it. Also reads the log bounds.
SELECT sp.id, sp.start_offset, sp.acquire_offset, p.log_start_offset, p.next_offset
  FROM queueing_sharepartition sp
  JOIN queueing_partition p ON p.topic_id = sp.topic_id AND p.number = sp.partition
 WHERE sp.group_id = %(group_id)s AND sp.topic_id = %(topic_id)s AND sp.partition = %(partition)s
   FOR UPDATE OF sp SKIP LOCKED

-- name: redeliverable --
-- Records of the window that may be handed out again: released and due, or acquired with an
-- expired lock. SKIP LOCKED passes over rows an acknowledgement is changing right now.
SELECT "offset", state, delivery_count, member_id
  FROM queueing_sharedelivery
 WHERE group_id = %(group_id)s AND topic_id = %(topic_id)s AND partition = %(partition)s
   AND ((state = 2 AND available_at <= now()) OR (state = 1 AND lock_until < now()))
 ORDER BY "offset"
 LIMIT %(limit)s
   FOR UPDATE SKIP LOCKED

-- name: reacquire --
-- Hand redeliverable records to a member: each acquisition counts a delivery.
UPDATE queueing_sharedelivery
   SET state = 1, delivery_count = delivery_count + 1, member_id = %(member_id)s,
       lock_until = now() + %(lock_ms)s * interval '1 millisecond'
 WHERE group_id = %(group_id)s AND topic_id = %(topic_id)s AND partition = %(partition)s
   AND "offset" = ANY(%(offsets)s::bigint[])

-- name: acquire_new --
-- Hand out never-delivered records [first, last] and move the partition's acquire offset past them.
WITH advanced AS (
    UPDATE queueing_sharepartition SET acquire_offset = %(last)s + 1 WHERE id = %(share_partition_id)s
)
INSERT INTO queueing_sharedelivery
       (group_id, topic_id, partition, "offset", state, delivery_count, member_id, lock_until, available_at)
SELECT %(group_id)s, %(topic_id)s, %(partition)s, o, 1, 1, %(member_id)s,
       now() + %(lock_ms)s * interval '1 millisecond', now()
  FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS o

-- name: advance_share_start --
-- Move the window's start to its first unfinished record (or the acquire offset if none is left).
UPDATE queueing_sharepartition sp
   SET start_offset = COALESCE(
         (SELECT min("offset") FROM queueing_sharedelivery d
           WHERE d.group_id = sp.group_id AND d.topic_id = sp.topic_id AND d.partition = sp.partition),
         sp.acquire_offset)
 WHERE sp.id = %(share_partition_id)s

-- name: skip_to_log_start --
-- Retention removed records the group never delivered: the window restarts at the log start.
UPDATE queueing_sharepartition SET acquire_offset = %(log_start)s, start_offset = %(log_start)s
 WHERE id = %(share_partition_id)s AND acquire_offset < %(log_start)s

-- name: records_at --
-- The records of one partition at the given offsets, in offset order.
SELECT "offset", key, value, value_format, headers, timestamp
  FROM queueing_record
 WHERE topic_id = %(topic_id)s AND partition = %(partition)s AND "offset" = ANY(%(offsets)s::bigint[])
 ORDER BY "offset"

-- name: finish_deliveries --
-- Accept (or drop before dead-lettering) records this member holds. The delivery count is the
-- fencing token: a record that was re-acquired since (by anyone) is not touched, so the late
-- acknowledgement is refused. The row lock waits for a concurrent acquisition, then re-checks.
DELETE FROM queueing_sharedelivery d
 USING unnest(%(topic_ids)s::bigint[], %(partitions)s::int[], %(offsets)s::bigint[], %(counts)s::int[])
       AS a(topic_id, partition, "offset", delivery_count)
 WHERE d.group_id = %(group_id)s AND d.topic_id = a.topic_id AND d.partition = a.partition
   AND d."offset" = a."offset" AND d.state = 1 AND d.member_id = %(member_id)s
   AND d.delivery_count = a.delivery_count
RETURNING d.topic_id, d.partition, d."offset"

-- name: release_deliveries --
-- Make held records available again, each after its own delay (fenced like finish_deliveries).
UPDATE queueing_sharedelivery d
   SET state = 2, member_id = NULL, lock_until = NULL,
       available_at = now() + a.delay_ms * interval '1 millisecond'
  FROM unnest(%(topic_ids)s::bigint[], %(partitions)s::int[], %(offsets)s::bigint[], %(counts)s::int[],
              %(delays_ms)s::bigint[]) AS a(topic_id, partition, "offset", delivery_count, delay_ms)
 WHERE d.group_id = %(group_id)s AND d.topic_id = a.topic_id AND d.partition = a.partition
   AND d."offset" = a."offset" AND d.state = 1 AND d.member_id = %(member_id)s
   AND d.delivery_count = a.delivery_count
RETURNING d.topic_id, d.partition, d."offset"

-- name: renew_deliveries --
-- Extend the locks of held records while a long handler runs (fenced like finish_deliveries).
UPDATE queueing_sharedelivery d
   SET lock_until = now() + %(lock_ms)s * interval '1 millisecond'
  FROM unnest(%(topic_ids)s::bigint[], %(partitions)s::int[], %(offsets)s::bigint[], %(counts)s::int[])
       AS a(topic_id, partition, "offset", delivery_count)
 WHERE d.group_id = %(group_id)s AND d.topic_id = a.topic_id AND d.partition = a.partition
   AND d."offset" = a."offset" AND d.state = 1 AND d.member_id = %(member_id)s
   AND d.delivery_count = a.delivery_count
RETURNING d.topic_id, d.partition, d."offset"

-- name: drop_deliveries --
-- Remove held rows (already locked by redeliverable) of records being dead-lettered at acquisition.
DELETE FROM queueing_sharedelivery
 WHERE group_id = %(group_id)s AND topic_id = %(topic_id)s AND partition = %(partition)s
   AND "offset" = ANY(%(offsets)s::bigint[])

-- name: drop_below_log_start --
-- Forget deliveries of records that retention removed from the log.
DELETE FROM queueing_sharedelivery
 WHERE group_id = %(group_id)s AND topic_id = %(topic_id)s AND partition = %(partition)s
   AND "offset" < %(log_start)s
