-- Wake-ups: how a reader about to sleep asks writers to NOTIFY it. Each section is run by the
-- function of the same name in storage/wakeups.py.
--
-- NOTIFY is not free: from the NOTIFY to the end of its commit a transaction holds a database-wide
-- lock, so notifying transactions commit one at a time (on the CI machine concurrent single sends
-- stopped at about 6,000 a second however many processes sent; without it they scale like plain
-- INSERTs). So a writer notifies only while a reader waits. A reader about to sleep takes a shared
-- session advisory lock on each key it waits for, on its LISTEN connection; a writer tries its key
-- exclusively, for its transaction: if it gets it, nobody waits and it stays silent; if not, it
-- notifies. A reader's shared lock can only be granted once no silent writer of that key is still
-- in flight (the writer holds its lock until its commit is visible), so a read made after the
-- grant sees every write that did not notify.
--
-- Lock spaces (the first key): 1397511936 for the log's appends, keyed by partition
-- ((topic_id mod 2^25) * 64 + partition mod 64, so a reader holds at most 64 locks a topic:
-- advisory locks take room in the server's lock table, sized by max_locks_per_transaction;
-- partitions that share a key only cost an unneeded NOTIFY when their appends overlap);
-- 1397511937 for the outbox's publishers, keyed by stripe (the backend's pid mod 64);
-- 1397511938 for the task layer's finished tasks, keyed by task (its id mod 2^31: a Result.wait());
-- 1397511939 for delayed sends, keyed by stripe (the backend's pid mod 64), for the mover.

-- name: ask_for_wakeups --
-- Ask the writers of these keys to NOTIFY; returns the keys refused: a writer that did not see the
-- ask holds each of them, in flight. The keys granted stay held (session locks outlive the
-- statement) and ask from now on; the reader reads once more before it sleeps.
SELECT key FROM unnest(%(keys)s::int[]) AS key
 WHERE NOT pg_try_advisory_lock_shared(%(space)s, key)

-- name: wait_for_writers --
-- Wait for the writers in flight on these keys to end (commit or roll back), by queueing for their
-- locks. A writer that tries a key while we queue for it sees the queue and notifies. The wait is
-- bounded by the connection's lock_timeout, so that the reader's other NOTIFYs are not held up:
-- past it the statement fails with lock_not_available, and the locks granted before stay held.
SELECT count(pg_advisory_lock_shared(%(space)s, key)) FROM unnest(%(keys)s::int[]) AS key

-- name: stop_waiting --
-- Withdraw every ask on this LISTEN connection: the reader is busy again, or what it waits for
-- changed.
SELECT pg_advisory_unlock_all()
