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
           (topic_id, partition, key, value, value_format, headers, deliver_at, created_at)
    VALUES (%(topic_id)s, %(partition)s, %(key)s, %(value)s, %(value_format)s, %(headers)s::jsonb,
            %(deliver_at)s, now())
 RETURNING id
)
SELECT id,
       CASE WHEN pg_try_advisory_xact_lock(1397511939, pg_backend_pid() & 63) THEN NULL
            ELSE pg_notify('sluice_delayed', %(payload)s) END
  FROM stored

-- name: claim_due --
-- Take up to `limit` due records out of the waiting table, earliest first; the caller appends them
-- to the log in the same transaction, so a record moves exactly once. SKIP LOCKED lets several
-- movers share the work. `deliver_at <= now()` uses the transaction's start: the log timestamp the
-- records get (now()) is then never before their time. Each row comes with its topic's partition
-- count, which places a keyed record (one round trip fewer than asking for it).
--
-- The last two columns say when the earliest record left waiting is due, in seconds from now
-- (negative: overdue) and as a time, NULLs if none is left: the mover sleeps until then without
-- asking again (a round trip a move). The statement's snapshot still holds the claimed rows, hence
-- the NOT IN. The first row carries them alone when nothing was due.
WITH claimed AS (
    DELETE FROM queueing_delayedrecord d
     WHERE id IN (SELECT id FROM queueing_delayedrecord
                   WHERE deliver_at <= now()
                   ORDER BY deliver_at, id
                   LIMIT %(limit)s
                     FOR UPDATE SKIP LOCKED)
    RETURNING id, topic_id, partition, key, value, value_format, headers, deliver_at,
              (SELECT t.partition_count FROM queueing_topic t WHERE t.id = d.topic_id) AS partition_count
), following AS (
    SELECT deliver_at FROM queueing_delayedrecord
     WHERE id NOT IN (SELECT id FROM claimed)
     ORDER BY deliver_at, id
     LIMIT 1
)
SELECT claimed.*, extract(epoch FROM following.deliver_at - clock_timestamp())::float8, following.deliver_at
  FROM (SELECT) one
  LEFT JOIN claimed ON true
  LEFT JOIN following ON true
 ORDER BY claimed.deliver_at, claimed.id
