-- Outbox events: the relay's claims. Each section is run by the function of the same name in
-- outbox/storage/events.py.

-- name: claim_events --
-- The oldest deliverable events, at most one per aggregate: an event is deliverable only when no
-- earlier event of its aggregate is still undelivered, which keeps per-aggregate order even with
-- several relays. SKIP LOCKED: an event another relay holds is passed over, and so (by the NOT
-- EXISTS) are the later events of its aggregate.
SELECT e.seq, e.id, e.aggregate_type, e.aggregate_id, e.event_type, e.payload, e.headers, e.destination,
       e.key, e.created_at, e.attempts
  FROM outbox_outboxevent e
 WHERE e.delivered_at IS NULL
   AND (e.next_attempt_at IS NULL OR e.next_attempt_at <= now())
   AND NOT EXISTS (SELECT 1 FROM outbox_outboxevent p
                    WHERE p.aggregate_type = e.aggregate_type AND p.aggregate_id = e.aggregate_id
                      AND p.delivered_at IS NULL AND p.seq < e.seq)
 ORDER BY e.seq
 LIMIT %(limit)s
   FOR UPDATE SKIP LOCKED

-- name: mark_delivered --
-- Events the destination confirmed (in the transaction that delivered them to a Sluice topic).
UPDATE outbox_outboxevent SET delivered_at = now(), attempts = attempts + 1, last_error = ''
 WHERE seq = ANY(%(seqs)s::bigint[])

-- name: mark_failed --
-- A failed delivery: try again after the back-off; the aggregate's later events wait behind it.
UPDATE outbox_outboxevent
   SET attempts = attempts + 1, last_error = %(error)s,
       next_attempt_at = now() + %(delay_ms)s * interval '1 millisecond'
 WHERE seq = %(seq)s

-- name: prune_delivered --
-- Remove delivered events older than the retention, a batch at a time.
DELETE FROM outbox_outboxevent
 WHERE seq IN (SELECT seq FROM outbox_outboxevent
                WHERE delivered_at < now() - %(older_than_s)s * interval '1 second'
                LIMIT %(limit)s)

-- name: remember_message --
-- The inbox: record that a consumer handled a message, in the transaction of its effect. A second
-- delivery waits on the unique index until the first commits, then finds the row and is skipped.
INSERT INTO outbox_inboxentry (consumer, message_id, processed_at)
VALUES (%(consumer)s, %(message_id)s, now())
    ON CONFLICT (consumer, message_id) DO NOTHING
RETURNING id

-- name: prune_inbox --
-- Forget handled messages older than the retention, a batch at a time.
DELETE FROM outbox_inboxentry
 WHERE id IN (SELECT id FROM outbox_inboxentry
               WHERE processed_at < now() - %(older_than_s)s * interval '1 second'
               LIMIT %(limit)s)
