-- The task layer's raw SQL. Each section is run by the storage function of the same name in
-- scheduler/storage.py.

-- name: prune_results --
-- Delete up to %(limit)s tasks finished more than %(keep_s)s seconds ago, oldest first, with their
-- attempts, slots and waiters. Batches keep each transaction short; SKIP LOCKED passes over rows a reader is changing
-- (a retry by hand), and the partial index on finished_at finds the oldest without a scan.
WITH doomed AS (
    SELECT id FROM scheduler_taskresult
     WHERE finished_at < now() - %(keep_s)s * interval '1 second'
     ORDER BY finished_at
     LIMIT %(limit)s
       FOR UPDATE SKIP LOCKED
), attempts AS (
    DELETE FROM scheduler_taskattempt a USING doomed WHERE a.task_id = doomed.id
), slots AS (
    -- A slot left by a run whose outcome was recorded elsewhere, until its lease lapsed.
    DELETE FROM scheduler_concurrencyslot s USING doomed WHERE s.task_id = doomed.id
), waiters AS (
    -- A task cancelled while it waited for a slot.
    DELETE FROM scheduler_concurrencywaiter w USING doomed WHERE w.task_id = doomed.id
)
DELETE FROM scheduler_taskresult t USING doomed WHERE t.id = doomed.id

-- name: enqueue_many --
-- The CTEs of a bulk enqueue (producer.send_selected puts them into the append of their records):
-- the rows of one task's enqueue_many, each row's own fields in one JSON array of arrays [id, args,
-- kwargs, unique key, concurrency key, concurrency limit] (encoded by Python's json in C, split
-- here), and a record for each, {"id", "task", "generation"} as producer.encode_value writes it
-- (name_json is the task name's JSON string), built here: a thousand tasks are one
-- statement and no Python per record. The writes wait on target, the partition's row, so a stale
-- topic id writes nothing. Scheduled tasks (records delayed) and workflow steps use the rows alone
-- (storage.insert_results). Every NOT NULL column is given: the model's Python defaults are not
-- column defaults.
input AS (
    SELECT r, ordinality FROM jsonb_array_elements(%(rows)s::jsonb) WITH ORDINALITY AS e(r, ordinality)
), written AS (
    INSERT INTO scheduler_taskresult (id, task_name, queue, args, kwargs, state, unique_key, enqueued_at, eta,
                                      generation, attempts, failures, lost, worker, error_class, error_message,
                                      traceback, progress_message, priority, concurrency_key, concurrency_limit)
    SELECT (r->>0)::uuid, %(task_name)s, %(queue)s, r->1, r->2, %(state)s, r->>3, now(), %(eta)s,
           1, 0, 0, 0, '', '', '', '', '', %(priority)s, r->>4, (r->>5)::int
      FROM input
     WHERE EXISTS (SELECT FROM target)
), source AS (
    SELECT ordinality,
           convert_to('{"id":"' || (r->>0) || '","task":' || %(name_json)s::text || ',"generation":1}', 'UTF8') AS value,
           %(json_format)s::smallint AS value_format
      FROM input
)

-- name: finished --
-- The finishes of tasks (succeeded, failed or cancelled) that earlier statements of this transaction
-- recorded: counted for /metrics, per queue, state and 10-second period of the finish, with their
-- run time (TaskFinishCount; shard, the session's pid modulo 8, keeps two workers' outcome
-- transactions off one counter row most of the time; sorted, so two statements upserting the same
-- rows lock them in one order), and announced to each task's Result.wait(): the waiter holds the
-- task's wake-up key shared (space 1397511938, the protocol at the top of
-- queueing/sql/wakeups.sql), so taking it here fails and we NOTIFY the task's channel; with nobody
-- waiting we take it and stay silent (a NOTIFY serialises commits database-wide). Either way the
-- key is held to our commit, so a waiter that asks meanwhile waits for it, then reads the finish.
-- ids is a uuid[] literal.
WITH finishing AS (
    SELECT unnest(%(ids)s::uuid[]) AS id
), rows AS (
    SELECT t.queue, t.state, t.started_at, t.finished_at
      FROM scheduler_taskresult t
     WHERE t.id = ANY(%(ids)s::uuid[]) AND t.finished_at IS NOT NULL
), counted AS (
    /* count_finishes */
)
/* announce_finishes */

-- name: count_finishes --
-- What finished() and succeed_tasks put in place of /* count_finishes */: the upsert of the counts
-- of the finished tasks in the CTE rows (queue, state, started_at, finished_at).
INSERT INTO scheduler_taskfinishcount AS c (queue, state, period, shard, count, run_seconds, run_max)
SELECT r.queue, r.state, date_bin('10 seconds', r.finished_at, timestamptz 'epoch'), pg_backend_pid() %% 8,
       count(*), coalesce(sum(extract(epoch FROM r.finished_at - r.started_at)), 0),
       max(extract(epoch FROM r.finished_at - r.started_at))
  FROM rows r
 GROUP BY 1, 2, 3, 4
 ORDER BY 1, 2, 3, 4
    ON CONFLICT (queue, state, period, shard) DO UPDATE
   SET count = c.count + EXCLUDED.count, run_seconds = c.run_seconds + EXCLUDED.run_seconds,
       run_max = greatest(c.run_max, EXCLUDED.run_max)

-- name: announce_finishes --
-- What finished() and succeed_tasks put in place of /* announce_finishes */: the wake-up of each
-- task of the CTE finishing (id), with the key and channel of storage.finish_key and
-- finish_channel: the uuid's low 31 bits, and its hex digits.
SELECT CASE WHEN pg_try_advisory_xact_lock(1397511938, k.key) THEN NULL ELSE pg_notify(k.channel, '') END
  FROM finishing f,
       LATERAL (SELECT ('x' || right(replace(f.id::text, '-', ''), 8))::bit(32)::int & 2147483647 AS key,
                       'sluice_r' || replace(f.id::text, '-', '') AS channel) AS k

-- name: purge_results --
-- Cancel up to %(limit)s tasks of a queue that have not started, oldest first; return their ids and
-- the delayed records of the scheduled ones, to be removed in the same transaction. FOR UPDATE waits for a
-- worker starting one of them right now, and the state is checked again after the wait, so a task
-- that started meanwhile is left alone (the index on (queue, state) finds them).
WITH doomed AS (
    SELECT id, delayed_id FROM scheduler_taskresult
     WHERE queue = %(queue)s AND state = ANY(%(states)s::text[])
     ORDER BY enqueued_at
     LIMIT %(limit)s
       FOR UPDATE
)
UPDATE scheduler_taskresult t
   SET state = 'cancelled', delayed_id = NULL, finished_at = now()
  FROM doomed
 WHERE t.id = doomed.id
RETURNING t.id, doomed.delayed_id

-- name: enqueue_task --
-- The CTEs of a single enqueue with a unique key (producer.send_selected puts them into the append
-- of its record; without a key, enqueue_one below):
-- the task's row and its record in one statement, in the caller's transaction or, in autocommit, as
-- a transaction of its own. ON CONFLICT DO NOTHING (no target, so it covers the partial unique
-- index task_unique_key_active) writes nothing when the unique key is taken: source then has no
-- row, no record is appended, and the caller's transaction stays usable without a savepoint. The
-- record is enqueue_many's; the write waits on target as there. Every NOT NULL column is given.
written AS (
    INSERT INTO scheduler_taskresult (id, task_name, queue, args, kwargs, state, unique_key, enqueued_at, eta,
                                      generation, attempts, failures, lost, worker, error_class, error_message,
                                      traceback, progress_message, priority, concurrency_key, concurrency_limit)
    SELECT %(id)s, %(task_name)s, %(queue)s, %(args)s::jsonb, %(kwargs)s::jsonb, 'queued', %(unique_key)s, now(),
           NULL, 1, 0, 0, 0, '', '', '', '', '', %(priority)s, %(concurrency_key)s, %(concurrency_limit)s
     WHERE EXISTS (SELECT FROM target)
        ON CONFLICT DO NOTHING
    RETURNING id
), source AS (
    SELECT 1 AS ordinality,
           convert_to('{"id":"' || id::text || '","task":' || %(name_json)s::text || ',"generation":1}', 'UTF8') AS value,
           %(json_format)s::smallint AS value_format
      FROM written
)

-- name: enqueue_one --
-- The CTE of a single enqueue without a unique key (producer.send_one_selected puts it into the
-- append of its record, storage.append_one_selected): the task's row, written once the partition's
-- row is locked, gated on slot as the record is. Nothing can conflict, so the row is a plain
-- INSERT: no ON CONFLICT, no counting of what was written. Every NOT NULL column is given.
written AS (
    INSERT INTO scheduler_taskresult (id, task_name, queue, args, kwargs, state, unique_key, enqueued_at, eta,
                                      generation, attempts, failures, lost, worker, error_class, error_message,
                                      traceback, progress_message, priority, concurrency_key, concurrency_limit)
    SELECT %(id)s, %(task_name)s, %(queue)s, %(args)s::jsonb, %(kwargs)s::jsonb, 'queued', NULL, now(),
           NULL, 1, 0, 0, 0, '', '', '', '', '', %(priority)s, %(concurrency_key)s, %(concurrency_limit)s
      FROM slot
)

-- name: start_tasks --
-- Start the tasks of a poll's first deliveries together, in one statement (its own transaction):
-- lock their rows in id order (two workers never wait on each other in a cycle), mark those that
-- may start running (active and not running, the record's generation, no concurrency key, a name
-- the worker runs without a rate limit, not lost too often; re-checked after a lock wait) and
-- insert their attempts. Returns the started ones; the others go the per-record way. No attempt of
-- such a task can be running (a first delivery, the row not running), so none is marked lost.
WITH locked AS (
    -- By the primary key only (a condition on the state could lead the planner to the state's
    -- index, over every queued task); the latest version of each row, after any lock wait.
    SELECT t.id, t.state, t.generation, t.concurrency_key, t.task_name, t.lost
      FROM scheduler_taskresult t
     WHERE t.id = ANY(%(ids)s::uuid[])
     ORDER BY t.id
       FOR UPDATE
), started AS (
    UPDATE scheduler_taskresult t
       SET state = 'running', attempts = t.attempts + 1, worker = %(worker)s,
           started_at = coalesce(t.started_at, now()), eta = NULL, delayed_id = NULL
      FROM locked l
      JOIN unnest(%(ids)s::uuid[], %(generations)s::int[]) AS r(id, generation) ON r.id = l.id
     WHERE t.id = l.id AND l.state IN ('queued', 'scheduled', 'retrying') AND l.generation = r.generation
       AND l.concurrency_key IS NULL AND l.task_name = ANY(%(names)s::text[]) AND l.lost <= %(max_lost)s
    RETURNING t.id, t.task_name, t.args, t.kwargs, t.attempts
), attempts AS (
    INSERT INTO scheduler_taskattempt (task_id, number, worker, started_at, outcome, error_class, error_message,
                                       traceback)
    SELECT id, attempts, %(worker)s, now(), 'running', '', '', '' FROM started
)
SELECT id, task_name, args, kwargs, attempts
  FROM started,
       -- In its own transaction (commit_level 'off') the commit does not wait for the WAL flush, as
       -- the worker's polls do not: lost in a server crash, a start only means the task is delivered
       -- and run again, as when its worker dies; the outcome's commit, durable, flushes the start
       -- with it. In a caller's transaction (commit_level NULL) the caller's level stands.
       (SELECT set_config('synchronous_commit', coalesce(%(commit_level)s, current_setting('synchronous_commit')),
                          true)) AS level

-- name: succeed_tasks --
-- Record a batch of succeeded tasks (the worker's, whose acknowledgements this transaction made) in
-- one statement: each row's state and return value (NULL for None, as the ORM writes it), its
-- attempt ended, and its finish counted and announced as finished does it. ids is a
-- uuid[] literal, numbers the attempts' numbers (an int[] literal) and values a JSON array, all in
-- one order: three parameters however long the batch, none dumped element by element.
-- A drain grows both tables faster than ANALYZE follows, and joins were planned as scans of the
-- table under statistics from when it was small (5 to 25 ms a batch at 30,000 tasks, and growing):
-- the rows are found by `id = ANY` and each attempt on its own through the task_id index (LIMIT 1
-- keeps the lateral lookup from being merged into a join), then updated by primary key.
WITH done AS (
    SELECT b.ids[e.n] AS id, b.numbers[e.n] AS number, nullif(e.value, 'null'::jsonb) AS value
      FROM (SELECT %(ids)s::uuid[] AS ids, %(numbers)s::int[] AS numbers) AS b,
           jsonb_array_elements(%(values)s::jsonb) WITH ORDINALITY AS e(value, n)
), rows AS (
    UPDATE scheduler_taskresult t
       SET state = 'succeeded', return_value = d.value, finished_at = now(),
           error_class = '', error_message = '', traceback = ''
      FROM done d
     WHERE t.id = ANY(%(ids)s::uuid[]) AND t.id = d.id
    RETURNING t.queue, t.state, t.started_at, t.finished_at
), counted AS (
    /* count_finishes */
), attempts AS (
    UPDATE scheduler_taskattempt t
       SET outcome = 'succeeded', ended_at = now()
     WHERE t.id = ANY(ARRAY(
               SELECT found.id
                 FROM done d
                CROSS JOIN LATERAL (
                      SELECT r.id FROM scheduler_taskattempt r
                       WHERE r.task_id = d.id AND r.number = d.number AND r.outcome = 'running'
                       LIMIT 1) AS found))
       AND t.outcome = 'running'
), finishing AS (
    SELECT id FROM done
)
/* announce_finishes */
