-- Periodic schedules' raw SQL, run by the storage functions of the same names in
-- scheduler/storage.py.

-- name: claim_due_schedules --
-- Lock up to %(limit)s enabled schedules whose next tick is due, earliest first, with the
-- transaction's now(). SKIP LOCKED: a schedule another scheduler is firing is left to it (its tick
-- commits with its enqueue, or rolls back whole and is claimed again); the partial index
-- schedule_due finds them without a scan.
SELECT id, now() FROM scheduler_schedule
 WHERE enabled AND next_run_at <= now()
 ORDER BY next_run_at
 LIMIT %(limit)s
   FOR UPDATE SKIP LOCKED

-- name: insert_tick --
-- Record a fired tick. The unique (schedule, tick_at) makes a second firing of the same tick
-- insert nothing (no row returned): the last line of defence behind the row lock.
INSERT INTO scheduler_scheduletick (schedule_id, tick_at, fired_at, trigger, missed, task_id, error)
VALUES (%(schedule_id)s, %(tick_at)s, now(), %(trigger)s, %(missed)s, NULL, '')
ON CONFLICT (schedule_id, tick_at) DO NOTHING
RETURNING id

-- name: seconds_to_next_tick --
-- Seconds (negative when overdue) until the earliest enabled schedule's next tick, by the
-- database's clock (the one claims are judged by); NULL when nothing is scheduled.
SELECT EXTRACT(EPOCH FROM min(next_run_at) - clock_timestamp())::float8
  FROM scheduler_schedule WHERE enabled

-- name: prune_ticks --
-- Delete up to %(limit)s tick records older than %(keep_s)s seconds, keeping each schedule's last
-- one (its last run stays visible). Only recent ticks guard against firing twice: a claimed
-- schedule's ticks are all later than its next_run_at.
WITH doomed AS (
    SELECT t.id FROM scheduler_scheduletick t
     WHERE t.fired_at < now() - %(keep_s)s * interval '1 second'
       AND t.tick_at < (SELECT max(l.tick_at) FROM scheduler_scheduletick l WHERE l.schedule_id = t.schedule_id)
     LIMIT %(limit)s
)
DELETE FROM scheduler_scheduletick t USING doomed WHERE t.id = doomed.id
