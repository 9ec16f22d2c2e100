-- The task layer's raw SQL. Each section is run by the storage function of the same name in
-- scheduler/storage.py.

-- name: prune_results --
-- Delete up to %(limit)s tasks finished more than %(keep_s)s seconds ago, oldest first, with their
-- attempts. Batches keep each transaction short; SKIP LOCKED passes over rows a reader is changing
-- (a retry by hand), and the partial index on finished_at finds the oldest without a scan.
WITH doomed AS (
    SELECT id FROM scheduler_taskresult
     WHERE finished_at < now() - %(keep_s)s * interval '1 second'
     ORDER BY finished_at
     LIMIT %(limit)s
       FOR UPDATE SKIP LOCKED
), attempts AS (
    DELETE FROM scheduler_taskattempt a USING doomed WHERE a.task_id = doomed.id
)
DELETE FROM scheduler_taskresult t USING doomed WHERE t.id = doomed.id
