-- Limits on task starts (scheduler/limits.py): concurrency slots with leases, their waiters, and
-- rate windows. Each section is run by the storage function of the same name in scheduler/storage.py.

-- name: lock_concurrency_key --
-- Serialise the starts of one concurrency key until the transaction ends: the count of its slots
-- and the insert of a new one must not interleave with another worker's (a key has no row to lock
-- before its first slot exists, hence an advisory lock on the key's hash; a collision of two keys
-- only serialises them).
SELECT pg_advisory_xact_lock(hashtextextended('sluice.concurrency.' || %(key)s, 0))

-- name: release_lapsed_slots --
-- Free the slots of a key whose lease lapsed: their workers died (SIGKILL) or lost the database.
DELETE FROM scheduler_concurrencyslot WHERE key = %(key)s AND lease_until < clock_timestamp()

-- name: take_slot --
-- Take a slot of the key for the task if fewer than the limit are held (and the task holds none:
-- a run of it whose worker vanished keeps its slot until the lease lapses). Run under
-- lock_concurrency_key, after release_lapsed_slots.
INSERT INTO scheduler_concurrencyslot (task_id, key, worker, lease_until)
SELECT %(task_id)s, %(key)s, %(worker)s, clock_timestamp() + %(lease_ms)s * interval '1 millisecond'
 WHERE (SELECT count(*) FROM scheduler_concurrencyslot WHERE key = %(key)s) < %(limit)s
   AND NOT EXISTS (SELECT 1 FROM scheduler_concurrencyslot WHERE task_id = %(task_id)s)
RETURNING task_id

-- name: renew_slots --
-- Extend the leases of the slots this worker holds for its running tasks (with their locks);
-- a slot missing here lapsed and may have been given to another task.
UPDATE scheduler_concurrencyslot
   SET lease_until = clock_timestamp() + %(lease_ms)s * interval '1 millisecond'
 WHERE task_id = ANY(%(task_ids)s::uuid[]) AND worker = %(worker)s
RETURNING task_id

-- name: free_slot --
-- Give back a task's slot (in the transaction that records its outcome); return its key.
DELETE FROM scheduler_concurrencyslot WHERE task_id = %(task_id)s RETURNING key

-- name: next_waiter --
-- The task waiting longest for a slot of the key, removed from the waiters: its record is made
-- available at once. SKIP LOCKED: two slots freed together wake two different waiters.
DELETE FROM scheduler_concurrencywaiter
 WHERE task_id = (SELECT task_id FROM scheduler_concurrencywaiter WHERE key = %(key)s
                   ORDER BY since LIMIT 1 FOR UPDATE SKIP LOCKED)
RETURNING "group", topic, partition, "offset"

-- name: ensure_rate_window --
-- Create a task name's window of recent starts on first use (a statement of its own, so that the
-- lock that follows sees a row another worker created at the same time).
INSERT INTO scheduler_ratewindow (task_name, starts) VALUES (%(task_name)s, '{}')
    ON CONFLICT (task_name) DO NOTHING

-- name: lock_rate_window --
-- Lock a task name's window of recent starts: the rate check and the new start are written under
-- this lock, so starts on every worker are counted exactly.
SELECT starts FROM scheduler_ratewindow WHERE task_name = %(task_name)s FOR UPDATE

-- name: clock_now --
-- The time now (not the transaction's start): read after a lock was granted.
SELECT clock_timestamp()

-- name: write_rate_window --
-- Store a task name's recent starts (under lock_rate_window's lock).
UPDATE scheduler_ratewindow SET starts = %(starts)s::timestamptz[] WHERE task_name = %(task_name)s
