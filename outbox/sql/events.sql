-- Outbox events and the inbox. Each section is run by the function of the same name in
-- outbox/storage/events.py.

-- name: insert_event --
-- Write one event in the caller's transaction. The wake-up rides in the same statement (one round
-- trip); a NOTIFY is delivered at commit only, so a relay wakes for committed events and never for a
-- rolled-back one. It is sent only while a relay waits (wake_relays).
WITH stored AS (
    INSERT INTO outbox_outboxevent
           (id, aggregate_type, aggregate_id, event_type, payload, headers, destination, key, created_at,
            attempts, last_error)
    VALUES (gen_random_uuid(), %(aggregate_type)s, %(aggregate_id)s, %(event_type)s, %(payload)s::jsonb,
            %(headers)s::jsonb, %(destination)s, %(key)s, now(), 0, '')
 RETURNING seq, id, created_at
)
SELECT seq, id, created_at,
       CASE WHEN pg_try_advisory_xact_lock(1397511937, pg_backend_pid() & 63) THEN NULL
            ELSE pg_notify('sluice_outbox', '') END
  FROM stored

-- name: wake_relays --
-- The wake-up of a publish that wrote its events otherwise (bulk_create). NOTIFY holds a
-- database-wide lock from the NOTIFY to the end of its commit, so notifying transactions commit one
-- at a time; business transactions that publish would all queue behind it. So a transaction
-- notifies only while a relay waits, as the log's appends do (the protocol is at the top of
-- queueing/sql/wakeups.sql): a relay about to sleep takes a shared session advisory lock on each of
-- 64 stripes (lock space 1397511937); a publishing transaction tries its stripe (its backend's pid
-- mod 64) exclusively and notifies only if that fails. Two publishers on one stripe at once only
-- cost one of them a NOTIFY.
SELECT CASE WHEN pg_try_advisory_xact_lock(1397511937, pg_backend_pid() & 63) THEN NULL
            ELSE pg_notify('sluice_outbox', '') END

-- name: claim_events --
-- Claim a batch: the oldest deliverable event of up to `limit` aggregates (the heads), and behind
-- each head the aggregate's next undelivered events, up to `limit` rows in all.
--
-- Order per aggregate with several relays: an event is a head only if no earlier event of its
-- aggregate is undelivered (it is the aggregate's oldest undelivered), and heads are locked FOR
-- UPDATE SKIP LOCKED. The head's row lock is the aggregate's mutex: while one relay holds it, any
-- other relay skips the head and, through the head test (the head is still undelivered in its
-- snapshot), everything behind it. When the holder commits, the head and the events it delivered behind it become delivered at once, so
-- another relay can only ever start after them. SKIP LOCKED rather than waiting: relays share the
-- aggregates instead of queueing behind each other, and a slow or poisoned aggregate holds up only
-- itself. (Advisory locks on hashed aggregates would do as well, but the row lock needs no slot
-- arithmetic and is released by the same commit that marks the events delivered.)
--
-- Candidates are the oldest `window` undelivered events (NULL: all of them), so that a claim
-- costs O(window) probes even when one aggregate has a long backlog; the relay widens the window
-- to all when the oldest events hold no head it can take (an aggregate backing off, or heads other
-- relays hold), so nothing waits behind them for long.
--
-- Events behind a head are not locked: nobody else can claim them while the head is ours (see
-- above). `due` is false for an event backing off after an earlier failure; the relay stops an
-- aggregate's run there. The head test is a scalar subquery on purpose: one probe of the partial
-- index outbox_pending_aggregate (undelivered rows only) per candidate, so an aggregate's delivered
-- history costs nothing. Written as NOT EXISTS, the planner may turn it into a hash anti-join, and
-- one aggregate with N pending events then costs N² comparisons per claim (24 s at N = 20,000).
WITH heads AS (
    SELECT e.seq, e.aggregate_type, e.aggregate_id
      FROM outbox_outboxevent e
     WHERE e.delivered_at IS NULL
       AND e.seq <= (SELECT max(w.seq)
                       FROM (SELECT seq FROM outbox_outboxevent
                              WHERE delivered_at IS NULL ORDER BY seq LIMIT %(window)s) w)
       AND (e.next_attempt_at IS NULL OR e.next_attempt_at <= now())
       AND e.seq = (SELECT min(p.seq) FROM outbox_outboxevent p
                     WHERE p.aggregate_type = e.aggregate_type AND p.aggregate_id = e.aggregate_id
                       AND p.delivered_at IS NULL)
     ORDER BY e.seq
     LIMIT %(limit)s
       FOR UPDATE SKIP LOCKED
)
SELECT f.seq, f.id, f.aggregate_type, f.aggregate_id, f.event_type, f.payload, f.headers, f.destination,
       f.key, f.created_at, f.attempts, f.next_attempt_at IS NULL OR f.next_attempt_at <= now() AS due
  FROM heads h
 CROSS JOIN LATERAL (
        -- A share of the batch per head: one hot aggregate may fill it, many aggregates get one each.
        SELECT * FROM outbox_outboxevent f
         WHERE f.aggregate_type = h.aggregate_type AND f.aggregate_id = h.aggregate_id
           AND f.delivered_at IS NULL AND f.seq >= h.seq
         ORDER BY f.seq
         LIMIT greatest(1, %(limit)s / (SELECT count(*) FROM heads))) f
 ORDER BY f.seq

-- name: mark_delivered --
-- Events the destination confirmed (for a Sluice topic: in the transaction that appended them).
UPDATE outbox_outboxevent
   SET delivered_at = now(), attempts = attempts + 1, last_error = '', next_attempt_at = NULL
 WHERE seq = ANY(%(seqs)s::bigint[])

-- name: mark_failed --
-- A failed delivery: try again after the back-off; the aggregate's later events wait behind it.
UPDATE outbox_outboxevent
   SET attempts = attempts + 1, last_error = %(error)s,
       next_attempt_at = now() + %(delay_ms)s * interval '1 millisecond'
 WHERE seq = %(seq)s

-- name: defer_events --
-- Events not tried because their destination just failed on an earlier event of the batch: they
-- wait as long as it does (attempts unchanged), so a down broker is probed by one event at a time
-- and its backlog does not fill the claims of relays that could deliver elsewhere.
UPDATE outbox_outboxevent
   SET last_error = %(error)s, next_attempt_at = now() + %(delay_ms)s * interval '1 millisecond'
 WHERE seq = ANY(%(seqs)s::bigint[])

-- name: prune_delivered --
-- Remove delivered events older than the retention, a batch at a time (short transactions, no long
-- lock on the table the publishers insert into).
DELETE FROM outbox_outboxevent
 WHERE seq IN (SELECT seq FROM outbox_outboxevent
                WHERE delivered_at < now() - %(older_than_s)s * interval '1 second'
                LIMIT %(limit)s)

-- name: remember_message --
-- The inbox: record that a consumer handled a message, in the transaction of its effect. A second
-- delivery running at the same time waits on the unique index until the first commits, then finds
-- the row and returns nothing (skip); if the first rolled back, the second inserts and runs.
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
