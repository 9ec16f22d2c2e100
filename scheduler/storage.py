"""The only module of the task layer that runs raw SQL, on Django's connection (so it joins the
caller's transaction)."""
import json
import uuid

from django.db import connection

from queueing import producer
from queueing import storage as engine_storage
from queueing.types import ValueFormat
from scheduler.sql import queries


def prune_results(*, keep_s, limit):
    """Delete up to limit tasks finished more than keep_s seconds ago; return how many went."""
    with connection.cursor() as cursor:
        cursor.execute(queries["prune_results"], {"keep_s": keep_s, "limit": limit})
        return cursor.rowcount


def prune_workflows(*, keep_s, limit):
    """Delete up to limit workflows finished more than keep_s seconds ago, with their steps; return
    how many went."""
    with connection.cursor() as cursor:
        cursor.execute(queries["prune_workflows"], {"keep_s": keep_s, "limit": limit})
        return cursor.rowcount


def enqueue_many(chunks, topic, task_name):
    """Write the new TaskResult rows of one enqueue_many (one task's, queued: they share name, queue
    and priority), given in chunks (an iterable of lists, made one at a time), and append a record
    for each to topic, in one transaction (the caller's): one statement a chunk, pipelined, so the
    database writes a chunk while the next is made. Set their enqueued_at."""
    written = []

    def batches():
        for rows in chunks:
            written.extend(rows)
            yield _many_params(rows)

    (_, _, now, _), *_ = producer.send_selected(queries["enqueue_many"], batches(), topic,
                                                max_bytes=RECORD_BYTES + len(json.dumps(task_name)))
    for row in written:
        row.enqueued_at = now


def insert_results(rows):
    """Write the rows as enqueue_many does, without their records (scheduled tasks, whose records
    wait in the delayed table, and workflow steps, whose records carry their step)."""
    # enqueue_many's CTEs run alone: target a row, source not read.
    now = _run(f"WITH target AS (SELECT), {queries['enqueue_many']} SELECT now()", _many_params(rows), "one")[0]
    for row in rows:
        row.enqueued_at = now


# The bytes of an enqueue_many record beside its task name's JSON string:
# {"id":"<36 characters>","task":<name>,"generation":1}.
RECORD_BYTES = 63


def _many_params(rows):
    first = rows[0]
    own = json.dumps([[str(r.id), r.args, r.kwargs, r.unique_key, r.concurrency_key, r.concurrency_limit]
                      for r in rows], separators=(",", ":"))
    return {"rows": own, "task_name": first.task_name, "queue": first.queue, "state": first.state,
            "eta": first.eta, "priority": first.priority, "json_format": ValueFormat.JSON,
            "name_json": json.dumps(first.task_name)}  # ASCII: its length is its bytes


def enqueue_task(row, topic):
    """Write a queued task's row and append its record to topic in one statement, of the caller's
    transaction or, in autocommit, of its own; set its enqueued_at. Return False, writing nothing,
    if its unique key is taken by a task still to finish."""
    name_json = json.dumps(row.task_name)
    params = {
        "id": row.id, "task_name": row.task_name, "queue": row.queue, "args": json.dumps(row.args),
        "kwargs": json.dumps(row.kwargs), "priority": row.priority,
        "concurrency_key": row.concurrency_key, "concurrency_limit": row.concurrency_limit,
    }
    if row.unique_key is None:
        # Nothing can conflict: the simpler statement, with the record enqueue_many's statement
        # builds in SQL, {"id", "task", "generation"}, made here.
        value = f'{{"id":"{row.id}","task":{name_json},"generation":1}}'.encode()
        _, _, row.enqueued_at = producer.send_one_selected(queries["enqueue_one"], params, topic, value=value,
                                                           value_format=ValueFormat.JSON)
        return True
    params.update(unique_key=row.unique_key, name_json=name_json, json_format=ValueFormat.JSON)
    [(_, _, enqueued_at, appended)] = producer.send_selected(queries["enqueue_task"], [params], topic,
                                                             max_bytes=RECORD_BYTES + len(name_json))
    if not appended:
        return False
    row.enqueued_at = enqueued_at
    return True


def finish_channel(task_id):
    """The channel a task's finish is announced on (one a task: a waiter hears only its own)."""
    return "sluice_r" + uuid.UUID(str(task_id)).hex


def finish_key(task_id):
    """The task's wake-up key in lock space wakeups.FINISHES (tasks that share one only cost an
    unneeded NOTIFY when both are waited for)."""
    return uuid.UUID(str(task_id)).int % 2147483648


def finished(task_ids):
    """Count the finishes of these tasks (succeeded, failed or cancelled), which the caller's
    transaction recorded, for /metrics, and wake whoever waits for each (at its commit): one
    statement, `finished` in tasks.sql. Every way a task finishes calls it, or (succeed_tasks) does
    the same in its own statement."""
    if task_ids:
        engine_storage.execute(FINISHED, {"ids": _array(task_ids)}, prepare=False)


def start_tasks(*, ids, generations, names, max_lost, worker):
    """Start the tasks of ids (with their records' generations) that may start at once (start_tasks
    in tasks.sql); return (id, task name, args, kwargs, attempt number) of each started. In its own
    transaction it commits without waiting for the WAL flush (a lost start runs the task again)."""
    # A worker's hot path: bound on the server (the engine's cursor), the id and generation arrays
    # each one literal rather than a dumped element each. Planned at every run: a plan prepared
    # while the table is small, early in a drain, stays with the connection as the table grows.
    return engine_storage.execute(queries["start_tasks"], {
        "ids": _array(ids), "generations": _array(generations), "names": names, "max_lost": max_lost,
        "worker": worker, "commit_level": None if connection.in_atomic_block else "off",
    }, prepare=False).fetchall()


def succeed_tasks(results):
    """Record [(task_id, attempt number, return value)] as succeeded, with their attempts, and do
    what finished() does for them, in the caller's transaction (one statement)."""
    if results:
        engine_storage.execute(SUCCEED_TASKS, {
            "ids": _array([i for i, _, _ in results]), "numbers": _array([n for _, n, _ in results]),
            "values": json.dumps([v for _, _, v in results]),
        }, prepare=False)  # as start_tasks


def _finishing(query):
    """query with the upsert of finish counts and the wake-ups in their places."""
    return (query.replace("/* count_finishes */", queries["count_finishes"], 1)
            .replace("/* announce_finishes */", queries["announce_finishes"], 1))


# The two statements that record finishes: counted and announced by the same SQL.
FINISHED = _finishing(queries["finished"])
SUCCEED_TASKS = _finishing(queries["succeed_tasks"])


def _array(values):
    """values (uuids or integers) as one PostgreSQL array literal, for a parameter cast to an array."""
    return "{" + ",".join(map(str, values)) + "}"


def claim_due_schedules(*, limit):
    """Lock up to limit due schedules in the caller's transaction; return (their ids, its now())."""
    with connection.cursor() as cursor:
        cursor.execute(queries["claim_due_schedules"], {"limit": limit})
        rows = cursor.fetchall()
    return [r[0] for r in rows], (rows[0][1] if rows else None)


def insert_tick(*, schedule_id, tick_at, trigger, missed):
    """Record a tick in the caller's transaction; return its id, or None if it was fired already."""
    with connection.cursor() as cursor:
        cursor.execute(queries["insert_tick"], {"schedule_id": schedule_id, "tick_at": tick_at, "trigger": trigger,
                                                "missed": missed})
        row = cursor.fetchone()
    return row[0] if row else None


def seconds_to_next_tick():
    """Seconds until the earliest enabled schedule is due (negative: overdue); None if none is."""
    with connection.cursor() as cursor:
        cursor.execute(queries["seconds_to_next_tick"])
        return cursor.fetchone()[0]


def prune_ticks(*, keep_s, limit):
    """Delete up to limit old tick records (each schedule keeps its last); return how many went."""
    with connection.cursor() as cursor:
        cursor.execute(queries["prune_ticks"], {"keep_s": keep_s, "limit": limit})
        return cursor.rowcount


def _run(query, params, fetch=None):
    """Run a query; return fetchone() or fetchall() (fetch "one" or "all"), or nothing."""
    with connection.cursor() as cursor:
        cursor.execute(query, params)
        if fetch == "one":
            return cursor.fetchone()
        if fetch == "all":
            return cursor.fetchall()
        return None


def take_slot(*, key, limit, task_id, worker, lease_ms):
    """Take one of key's limit slots for the task, under the key's lock until the caller's
    transaction ends; return whether it was taken."""
    _run(queries["lock_concurrency_key"], {"key": key})
    _run(queries["release_lapsed_slots"], {"key": key})
    taken = _run(queries["take_slot"], {"key": key, "limit": limit, "task_id": task_id, "worker": worker,
                                        "lease_ms": lease_ms}, "one")
    return taken is not None


def renew_slots(*, task_ids, worker, lease_ms):
    """Extend the leases of the worker's slots of these tasks; return the task ids still holding one."""
    if not task_ids:
        return set()
    rows = _run(queries["renew_slots"], {"task_ids": list(task_ids), "worker": worker, "lease_ms": lease_ms}, "all")
    return {str(row[0]) for row in rows}


def free_slot(*, task_id):
    """Give back the task's slot in the caller's transaction; return its key, or None."""
    row = _run(queries["free_slot"], {"task_id": task_id}, "one")
    return row[0] if row else None


def next_waiter(*, key):
    """Remove and return the (group, topic, partition, offset) of key's longest waiter, or None."""
    return _run(queries["next_waiter"], {"key": key}, "one")


def lock_rate_window(*, task_name):
    """Lock a task name's recent starts (caller's transaction); return (starts, the time now)."""
    _run(queries["ensure_rate_window"], {"task_name": task_name})
    starts = _run(queries["lock_rate_window"], {"task_name": task_name}, "one")[0]
    return starts, _run(queries["clock_now"], {}, "one")[0]


def write_rate_window(*, task_name, starts):
    _run(queries["write_rate_window"], {"task_name": task_name, "starts": list(starts)})


def purge_results(*, queue, states, limit):
    """Cancel up to limit tasks of queue in states (caller's transaction); return (id, delayed id) of
    each (the delayed id None for those not scheduled)."""
    rows = _run(queries["purge_results"], {"queue": queue, "states": [str(s) for s in states], "limit": limit}, "all")
    return [(row[0], row[1]) for row in rows]
