-- Half messages: the check-back loop's claim. Run by the function of the same name in
-- outbox/storage/half.py.

-- name: claim_due_checks --
-- Take prepared half messages whose check is due, pushing their next check forward and counting
-- the check, and commit at once: the check itself (a callback that may be slow) then runs with no
-- transaction open. SKIP LOCKED lets several check-back loops share the work; one that dies after
-- the claim only delays that check to the next interval.
UPDATE outbox_halfmessage h
   SET next_check_at = now() + h.check_interval_ms * interval '1 millisecond',
       check_count = h.check_count + 1
 WHERE h.id IN (SELECT id FROM outbox_halfmessage
                 WHERE state = 'prepared' AND next_check_at <= now()
                 ORDER BY next_check_at
                 LIMIT %(limit)s
                   FOR UPDATE SKIP LOCKED)
RETURNING h.id
