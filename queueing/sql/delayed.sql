-- Delayed records: they wait in their own table and enter the log when due, so offset order stays
-- visibility order. Each section is run by the storage function of the same name in storage/delayed.py.

-- name: claim_due --
-- Take up to `limit` due records out of the waiting table, earliest first; the caller appends them
-- to the log in the same transaction, so a record moves exactly once. SKIP LOCKED lets several
-- movers share the work. `deliver_at <= now()` uses the transaction's start: the log timestamp the
-- records get (now()) is then never before their time. Each row comes with its topic's partition
-- count, which places a keyed record (one round trip fewer than asking for it).
DELETE FROM queueing_delayedrecord d
 WHERE id IN (SELECT id FROM queueing_delayedrecord
               WHERE deliver_at <= now()
               ORDER BY deliver_at, id
               LIMIT %(limit)s
                 FOR UPDATE SKIP LOCKED)
RETURNING id, topic_id, partition, key, value, value_format, headers, deliver_at,
          (SELECT t.partition_count FROM queueing_topic t WHERE t.id = d.topic_id)

-- name: next_due --
-- Seconds until the earliest waiting record is due (negative: overdue), and its time; NULLs when
-- none waits.
SELECT extract(epoch FROM min(deliver_at) - clock_timestamp()), min(deliver_at) FROM queueing_delayedrecord
