-- Delayed records: they wait in their own table and enter the log when due, so offset order stays
-- visibility order. Each section is run by the storage function of the same name in storage/delayed.py.

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
