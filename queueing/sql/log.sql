-- The log's hot-path queries. Each section is run by the storage function of the same name.
--
-- Wake-ups: an append NOTIFYs only while some consumer of its partition waits; it tries the
-- partition's wake-up lock (space 1397511936, one key per partition mod 64) exclusively for its
-- transaction and stays silent when it gets it. The protocol is at the top of sql/wakeups.sql.

-- name: append_records --
-- Append a batch to one partition; returns its base offset, or no row if the partition is missing.
-- The UPDATE takes the partition row's lock and keeps it until the transaction ends, so offsets are
-- handed out in commit order: the next appender waits on this row until we commit or roll back.
-- That keeps offsets dense (a rollback undoes the increment too) and rules out a late commit
-- behind a reader. The NOTIFY is delivered at commit, to wake long-polling consumers.
WITH slot AS (
    UPDATE queueing_partition
       SET next_offset = next_offset + %(count)s,
           size_bytes = size_bytes + %(bytes)s
     WHERE topic_id = %(topic_id)s AND number = %(partition)s
 RETURNING next_offset - %(count)s AS base_offset
), stored AS (
    INSERT INTO queueing_record
           (topic_id, partition, "offset", key, value, value_format, headers, timestamp, producer_id, sequence)
    SELECT %(topic_id)s, %(partition)s, slot.base_offset + r.ordinality - 1, r.key, r.value, r.value_format,
           r.headers, now(), %(producer_id)s::bigint, %(base_sequence)s::int + r.ordinality::int - 1
      FROM slot,
           unnest(%(keys)s::bytea[], %(values)s::bytea[], %(value_formats)s::smallint[], %(headers)s::jsonb[])
           WITH ORDINALITY AS r(key, value, value_format, headers, ordinality)
)
SELECT base_offset,
       CASE WHEN pg_try_advisory_xact_lock(1397511936, ((%(topic_id)s::bigint %% 33554432) * 64 + %(partition)s %% 64)::int)
            THEN NULL ELSE pg_notify('sluice_t' || %(topic_id)s::text, %(partition)s::text) END
  FROM slot

-- name: append_record --
-- append_records for a single record, with plain parameters (no arrays to build and unpack), each
-- named once: the insert takes topic and partition from the updated row, and the wake-up rides in
-- its RETURNING, so the reply is the base offset alone. The same lock and the same wake-up.
WITH slot AS (
    UPDATE queueing_partition
       SET next_offset = next_offset + 1, size_bytes = size_bytes + %(bytes)s
     WHERE topic_id = %(topic_id)s AND number = %(partition)s
 RETURNING topic_id, number, next_offset - 1 AS base_offset,
           CASE WHEN pg_try_advisory_xact_lock(1397511936, ((topic_id %% 33554432) * 64 + number %% 64)::int)
                THEN NULL ELSE pg_notify('sluice_t' || topic_id::text, number::text) END
), stored AS (
    INSERT INTO queueing_record
           (topic_id, partition, "offset", key, value, value_format, headers, timestamp, producer_id, sequence)
    SELECT slot.topic_id, slot.number, slot.base_offset, %(key)s::bytea, %(value)s::bytea,
           %(value_format)s::smallint, %(header)s::jsonb, now(), %(producer_id)s::bigint, %(base_sequence)s::int
      FROM slot
)
SELECT base_offset FROM slot

-- name: append_selected --
-- Append records that a caller's query makes, after the caller's own CTEs (put in place of the
-- comment below), in one statement: a task's row and its record, or a thousand of each, in one
-- round trip, no record encoded in Python. The caller's CTE named source gives (ordinality from 1,
-- value bytea, value_format smallint) and may read the caller's writes (an INSERT's RETURNING), so
-- it may give no row; the caller's writes should be gated on target (a row while the partition
-- exists), so that a topic deleted or recreated since its id was cached writes nothing. The same
-- lock, offsets, timestamps and wake-up as append_records; no keys or headers; nothing is locked
-- when source is empty. Returns one row: the base offset (NULL when nothing was appended), the
-- transaction's time (the records' timestamp), how many records source gave, and whether the
-- partition exists.
WITH target AS (
    SELECT FROM queueing_partition WHERE topic_id = %(topic_id)s AND number = %(partition)s
), /* the caller's CTEs */,
counted AS (
    SELECT count(*) AS records, coalesce(sum(octet_length(value)), 0) AS bytes FROM source
), slot AS (
    UPDATE queueing_partition
       SET next_offset = next_offset + counted.records, size_bytes = size_bytes + counted.bytes
      FROM counted
     WHERE topic_id = %(topic_id)s AND number = %(partition)s AND counted.records > 0
 RETURNING topic_id, number, next_offset - counted.records AS base_offset,
           CASE WHEN pg_try_advisory_xact_lock(1397511936, ((topic_id %% 33554432) * 64 + number %% 64)::int)
                THEN NULL ELSE pg_notify('sluice_t' || topic_id::text, number::text) END
), stored AS (
    INSERT INTO queueing_record
           (topic_id, partition, "offset", key, value, value_format, headers, timestamp, producer_id, sequence)
    SELECT slot.topic_id, slot.number, slot.base_offset + source.ordinality - 1, NULL, source.value,
           source.value_format, NULL, now(), NULL, NULL
      FROM slot, source
)
SELECT (SELECT base_offset FROM slot), now(), (SELECT records FROM counted), EXISTS (SELECT FROM target)

-- name: append_one_selected --
-- append_record for one record whose value the caller gives, with the caller's CTEs (put in place
-- of the comment below) in the same statement: a task's row and its record in one round trip. The
-- partition's row is updated first (its lock, as append_records takes it); the caller's CTEs may
-- read slot, which has a row while the partition exists, and should gate their writes on it, so
-- that a topic deleted or recreated since its id was cached writes nothing. No CTE counts or
-- aggregates, unlike append_selected: for one record the statement is simpler, and cheaper to run
-- (a single enqueue's statement went from some 370 µs to 330). Returns the base offset and the
-- transaction's time, or no row when the partition is missing.
WITH slot AS (
    UPDATE queueing_partition
       SET next_offset = next_offset + 1, size_bytes = size_bytes + octet_length(%(value)s::bytea)
     WHERE topic_id = %(topic_id)s AND number = %(partition)s
 RETURNING topic_id, number, next_offset - 1 AS base_offset,
           CASE WHEN pg_try_advisory_xact_lock(1397511936, ((topic_id %% 33554432) * 64 + number %% 64)::int)
                THEN NULL ELSE pg_notify('sluice_t' || topic_id::text, number::text) END
), /* the caller's CTEs */,
stored AS (
    INSERT INTO queueing_record
           (topic_id, partition, "offset", key, value, value_format, headers, timestamp, producer_id, sequence)
    SELECT slot.topic_id, slot.number, slot.base_offset, NULL, %(value)s::bytea, %(value_format)s::smallint, NULL,
           now(), NULL, NULL
      FROM slot
)
SELECT base_offset, now() FROM slot

-- name: append_partitions --
-- Append to several partitions in one statement, for a transaction that writes to many (the
-- outbox relay): batch i goes to (topic_ids[i], partitions[i]), each partition named once; each
-- record names its batch and its position in it. Returns (batch, base offset, the records'
-- timestamp) for each batch whose partition exists. A batch named with no records of its own only
-- gets its offsets: the caller COPYs it in next. storage/log.py puts append_to_partitions in place.
WITH wanted AS (
    SELECT * FROM unnest(%(topic_ids)s::bigint[], %(partitions)s::int[], %(counts)s::int[], %(bytes)s::bigint[])
                  WITH ORDINALITY AS w(topic_id, number, count, bytes, batch)
), source AS (
    SELECT * FROM unnest(%(batches)s::bigint[], %(positions)s::int[], %(keys)s::bytea[], %(values)s::bytea[],
                         %(value_formats)s::smallint[], %(headers)s::jsonb[])
                  AS r(batch, position, key, value, value_format, headers)
), /* append_to_partitions */
SELECT batch, base_offset, now() FROM slot

-- name: append_to_partitions --
-- The CTEs that append a statement's records to several partitions, after the statement's own
-- CTEs wanted (batch, topic_id, number, count, bytes: a row per partition, each named once) and
-- source (batch, position, key, value, value_format, headers: a row per record, positions from 0
-- in its batch); the statement reads slot (batch, topic_id, number, base_offset) for what was
-- appended: a batch whose partition is missing has no row there. The partitions' rows are locked
-- first, in (topic, partition) order, so that two such appends cannot deadlock on them; each lock
-- is then held until the transaction ends, as append_records' is, with the same wake-ups.
locked AS (
    SELECT p.topic_id, p.number
      FROM queueing_partition p JOIN wanted w ON p.topic_id = w.topic_id AND p.number = w.number
     ORDER BY p.topic_id, p.number
       FOR UPDATE OF p
), slot AS (
    UPDATE queueing_partition p
       SET next_offset = p.next_offset + w.count, size_bytes = p.size_bytes + w.bytes
      FROM wanted w JOIN locked l ON l.topic_id = w.topic_id AND l.number = w.number
     WHERE p.topic_id = w.topic_id AND p.number = w.number
 RETURNING w.batch, p.topic_id, p.number, p.next_offset - w.count AS base_offset,
           CASE WHEN pg_try_advisory_xact_lock(1397511936, ((p.topic_id %% 33554432) * 64 + p.number %% 64)::int)
                THEN NULL ELSE pg_notify('sluice_t' || p.topic_id::text, p.number::text) END
), stored AS (
    INSERT INTO queueing_record
           (topic_id, partition, "offset", key, value, value_format, headers, timestamp, producer_id, sequence)
    SELECT slot.topic_id, slot.number, slot.base_offset + r.position, r.key, r.value, r.value_format, r.headers,
           now(), NULL, NULL
      FROM slot JOIN source r ON r.batch = slot.batch
)

-- name: reserve_offsets --
-- Take the partition's append lock and count offsets for a batch that COPY then writes in the same
-- transaction; returns the base offset and the transaction's time for the records' timestamps.
UPDATE queueing_partition
   SET next_offset = next_offset + %(count)s, size_bytes = size_bytes + %(bytes)s
 WHERE topic_id = %(topic_id)s AND number = %(partition)s
RETURNING next_offset - %(count)s, now(),
          CASE WHEN pg_try_advisory_xact_lock(1397511936, ((topic_id %% 33554432) * 64 + number %% 64)::int)
               THEN NULL ELSE pg_notify('sluice_t' || topic_id::text, number::text) END

-- name: lock_partition --
-- Take the partition's append lock before an idempotent producer's sequence check, so a retried
-- send and its original cannot both pass the check.
SELECT next_offset FROM queueing_partition WHERE topic_id = %(topic_id)s AND number = %(partition)s FOR UPDATE

-- name: producer_state --
-- The last batch this producer stored on the partition (read under the append lock).
SELECT last_base_sequence, last_sequence, last_base_offset
  FROM queueing_producerstate
 WHERE producer_id = %(producer_id)s AND topic_id = %(topic_id)s AND partition = %(partition)s

-- name: save_producer_state --
-- Remember the batch just appended, in the same transaction as the append.
INSERT INTO queueing_producerstate
       (producer_id, topic_id, partition, last_base_sequence, last_sequence, last_base_offset, updated_at)
VALUES (%(producer_id)s, %(topic_id)s, %(partition)s, %(base_sequence)s, %(last_sequence)s, %(base_offset)s, now())
ON CONFLICT (producer_id, topic_id, partition) DO UPDATE
   SET last_base_sequence = EXCLUDED.last_base_sequence,
       last_sequence = EXCLUDED.last_sequence,
       last_base_offset = EXCLUDED.last_base_offset,
       updated_at = EXCLUDED.updated_at

-- name: commit_and_fetch --
-- One round trip for a consumer's poll: store the offsets it hands in, then read up to
-- per_partition records from each (topic, partition, position). Either half may be empty; the
-- last column of every row says how many offsets were stored, and with no records there is one
-- row of nulls with that count.
--
-- The commit stores a member's offsets all or none: only if its generation is current and it
-- owns every partition named. FOR SHARE conflicts with the FOR UPDATE that a rebalance or an
-- offset reset takes on the group row; after waiting, PostgreSQL re-tests the generation on the new
-- row version, so a fenced member's commit finds no row and stores nothing. set_config(..., true)
-- sets this transaction's commit level. A data-modifying WITH runs to completion before the read.
--
-- The read goes in offset order, never below the log start (records retention has let go may
-- still be on disk until their segment is dropped). Each LATERAL branch is one range scan of the
-- primary key in each time segment, so a partition's rows come as one run in offset order.
WITH fence AS (
    SELECT id, set_config('synchronous_commit',
                          coalesce(%(commit_level)s, current_setting('synchronous_commit')), true)
      FROM queueing_consumergroup
     WHERE id = %(group_id)s AND generation = %(generation)s
       FOR SHARE
), owned AS (
    SELECT c.topic_id, c.partition, c.committed
      FROM unnest(%(commit_topic_ids)s::bigint[], %(commit_partitions)s::int[], %(offsets)s::bigint[])
           AS c(topic_id, partition, committed)
      JOIN queueing_groupassignment a
        ON a.group_id = %(group_id)s AND a.topic_id = c.topic_id AND a.partition = c.partition
       AND a.member_id = %(member_id)s
), stored AS (
    INSERT INTO queueing_committedoffset (group_id, topic_id, partition, "offset", committed_at)
    SELECT fence.id, owned.topic_id, owned.partition, owned.committed, now()
      FROM fence, owned
     WHERE (SELECT count(*) FROM owned) = cardinality(%(commit_topic_ids)s::bigint[])
        ON CONFLICT (group_id, topic_id, partition) DO UPDATE
       SET "offset" = EXCLUDED."offset", committed_at = EXCLUDED.committed_at
    RETURNING 1
)
SELECT r.topic_id, r.partition, r."offset", r.key, r.value, r.value_format, r.headers, r.timestamp,
       committed.count
  FROM (SELECT count(*) FROM stored) committed
  LEFT JOIN (
        SELECT r.*
          FROM unnest(%(topic_ids)s::bigint[], %(partitions)s::int[], %(positions)s::bigint[])
               AS p(topic_id, partition, position)
          JOIN queueing_partition bounds ON bounds.topic_id = p.topic_id AND bounds.number = p.partition
         CROSS JOIN LATERAL (
                SELECT * FROM queueing_record r
                 WHERE r.topic_id = p.topic_id AND r.partition = p.partition
                   AND r."offset" >= greatest(p.position, bounds.log_start_offset)
                 ORDER BY r."offset"
                 LIMIT %(per_partition)s) r
       ) r ON true

-- name: offset_for_timestamp --
-- The first offset at or after a moment, for resets by time (the BRIN index narrows the scan).
SELECT min("offset") FROM queueing_record
 WHERE topic_id = %(topic_id)s AND partition = %(partition)s AND timestamp >= %(timestamp)s
