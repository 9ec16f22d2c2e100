-- Delayed records: they wait in their own table and enter the log when due, so offset order stays
-- visibility order. Each section is run by the storage function of the same name in storage/delayed.py.

-- name: schedule_record --
-- Store a record to enter the log at deliver_at, in the caller's transaction if there is one. The
-- NOTIFY (its payload the time, so that a mover sleeping until a sooner record stays asleep) is
-- delivered at commit and sent only while a mover waits, as the outbox's publishers do (the
-- protocol is at the top of wakeups.sql): a mover about to sleep takes a shared session advisory
-- lock on each of 64 stripes (lock space 1397511939); a scheduling transaction tries its stripe
-- (its backend's pid mod 64) exclusively and notifies only if that fails. NOTIFY serialises the
-- commits of the transactions that send one, so at 1,000 sends a second one each queued the
-- senders, and the mover's own commit, behind each other.
WITH stored AS (
    INSERT INTO queueing_delayedrecord
           (topic_id, partition, key, key_hash, value, value_format, headers, deliver_at, created_at)
    VALUES (%(topic_id)s, %(partition)s, %(key)s, %(key_hash)s, %(value)s, %(value_format)s, %(headers)s::jsonb,
            %(deliver_at)s, now())
 RETURNING id
)
SELECT id,
       CASE WHEN pg_try_advisory_xact_lock(1397511939, pg_backend_pid() & 63) THEN NULL
            ELSE pg_notify('sluice_delayed', %(payload)s) END
  FROM stored

-- name: move_due --
-- Take up to `limit` due records out of the waiting table, earliest first, and append them to the
-- log, all in this one statement: in autocommit, one round trip moves them and commits, and a
-- record moves exactly once. SKIP LOCKED lets several movers share the work. `deliver_at <= now()`
-- uses the statement's start: the log timestamp the records get (now()) is then never before
-- their time. A record goes to the partition it was sent to, or by its key's hash (Kafka's murmur2,
-- taken at the send) over the partitions the topic has now, or to partition 0; to each partition in
-- deliver_at order, with the headers that name its delayed id and due time.
--
-- The result is one row: how many records moved, then when the earliest record left waiting is
-- due, in seconds from now (negative: overdue) and as a time, NULLs if none is left: the mover
-- sleeps until then without asking again. The statement's snapshot still holds the claimed rows,
-- hence the NOT IN. A claimed record whose partition is missing fails the whole statement (the cast
-- of the message to int, which is not a constant the planner would fold), so that nothing leaves
-- the waiting table without entering the log.
WITH claimed AS (
    DELETE FROM queueing_delayedrecord d
     WHERE id IN (SELECT id FROM queueing_delayedrecord
                   WHERE deliver_at <= now()
                   ORDER BY deliver_at, id
                   LIMIT %(limit)s
                     FOR UPDATE SKIP LOCKED)
    RETURNING d.id, d.topic_id, d.partition, d.key, d.key_hash, d.value, d.value_format, d.headers, d.deliver_at
), placed AS (
    SELECT c.*, CASE WHEN c.partition < t.partition_count THEN c.partition
                     WHEN c.key_hash IS NOT NULL THEN (c.key_hash & 2147483647) %% t.partition_count
                     ELSE 0 END AS number
      FROM claimed c JOIN queueing_topic t ON t.id = c.topic_id
), wanted AS (
    SELECT row_number() OVER (ORDER BY topic_id, number) AS batch, topic_id, number, count(*) AS count,
           sum(coalesce(octet_length(value), 0) + coalesce(octet_length(key), 0)) AS bytes
      FROM placed
     GROUP BY topic_id, number
), source AS (
    SELECT w.batch, row_number() OVER (PARTITION BY w.batch ORDER BY p.deliver_at, p.id) - 1 AS position,
           p.key, p.value, p.value_format,
           coalesce(p.headers, '{}'::jsonb) || jsonb_build_object(
               %(id_header)s::text, p.id::text,
               %(due_header)s::text,
               to_char(p.deliver_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"')) AS headers
      FROM placed p JOIN wanted w ON w.topic_id = p.topic_id AND w.number = p.number
), /* append_to_partitions */,
following AS (
    SELECT deliver_at FROM queueing_delayedrecord
     WHERE id NOT IN (SELECT id FROM claimed)
     ORDER BY deliver_at, id
     LIMIT 1
)
SELECT CASE WHEN (SELECT count(*) FROM slot) = (SELECT count(*) FROM wanted) THEN (SELECT count(*) FROM placed)
            ELSE concat('delayed records claimed for ', (SELECT count(*) FROM wanted) - (SELECT count(*) FROM slot),
                        ' missing partition(s)')::int END,
       extract(epoch FROM following.deliver_at - clock_timestamp())::float8, following.deliver_at
  FROM (SELECT) one
  LEFT JOIN following ON true
