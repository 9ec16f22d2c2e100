-- Workflows' raw SQL, run by the storage functions of the same names in scheduler/storage.py.

-- name: prune_workflows --
-- Delete up to %(limit)s workflows finished more than %(keep_s)s seconds ago, oldest first, with
-- their steps (their tasks are pruned by prune_results, on the same clock). SKIP LOCKED passes over
-- a workflow an outcome transaction holds (a task of it still running records its result on its
-- step); the partial index workflow_finished finds the oldest without a scan.
WITH doomed AS (
    SELECT id FROM scheduler_workflow
     WHERE finished_at < now() - %(keep_s)s * interval '1 second'
     ORDER BY finished_at
     LIMIT %(limit)s
       FOR UPDATE SKIP LOCKED
), steps AS (
    DELETE FROM scheduler_workflowstep s USING doomed WHERE s.workflow_id = doomed.id
)
DELETE FROM scheduler_workflow w USING doomed WHERE w.id = doomed.id
