"""The task worker's batched paths: a poll's records started in one transaction, a batch's
successes recorded in one, and children running batches of jobs (real PostgreSQL, real children)."""
import time

import pytest
from django.db import connection, transaction

from queueing import models as engine_models, share
from queueing.storage import share as share_storage
from scheduler import models, storage, tasks, worker
from tests.conftest import statements
from tests.sampleapp import tasks as sample

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def fast(settings):
    settings.SLUICE = {**settings.SLUICE, "POLL_FALLBACK_MS": 50}


@pytest.fixture
def bare():
    """A worker with its consumer but no child processes: its steps are called one by one."""
    loop = worker.TaskWorker("sample")
    tasks.ensure_queue("sample")
    share.configure_group(loop.group, delivery_limit=tasks.MAX_ATTEMPTS_LIMIT)
    loop.consumer = share.ShareConsumer(loop.group, tasks.bands("sample"), auto_offset_reset="earliest",
                                        max_records=10, client_id="task-worker", ordered=True, listen=False)
    yield loop
    loop.consumer.close()


def take_away(loop, record):
    """Make another member acquire record, as after a lapsed lock: this worker's acknowledgement of
    it is then refused."""
    topic_id = engine_models.Topic.objects.get(name=record.topic).id
    share_storage.split(group_id=loop.consumer.group_row.id, topic_id=topic_id, partition=record.partition,
                        member_id=loop.consumer.member_id, offsets=[record.offset])
    engine_models.ShareDelivery.objects.filter(
        group_id=loop.consumer.group_row.id, topic_id=topic_id, partition=record.partition, offset=record.offset,
    ).update(delivery_count=record.delivery_count + 1, member_id="another-member")


def test_a_polls_first_deliveries_start_in_one_statement(bare):
    results = [sample.add.enqueue(n, n) for n in range(5)]
    records = bare.consumer.poll(timeout=0, max_records=10)
    assert len(records) == 5
    started = []
    [statement] = statements(lambda: started.extend(bare._dispatch_many(records)))
    assert statement.startswith("WITH locked AS") and "FOR UPDATE" in statement
    assert [r.job.task_id for r in started] == [str(r.id) for r in results]
    for result in results:
        row = result.refresh().row
        assert (row.state, row.attempts, row.worker, row.lost) == ("running", 1, bare.worker_id, 0)
        assert row.started_at is not None
        assert [(a.number, a.outcome, a.worker) for a in result.attempts()] == [(1, "running", bare.worker_id)]


def test_a_batch_of_successes_is_recorded_in_one_transaction_and_a_lost_lock_discards_only_its_own(bare):
    results = [sample.add.enqueue(n, 1) for n in range(3)]
    started = bare._dispatch_many(bare.consumer.poll(timeout=0, max_records=10))
    take_away(bare, started[1].record)
    sent = statements(lambda: bare._succeed_many([(running, n + 1) for n, running in enumerate(started)]))
    # One transaction, no savepoint: the engine's fenced acceptance (and the split of the range the
    # lost record broke), then one statement for the results, their attempts and announcements.
    # (statements() lists Django's statements first, then the engine cursor's: the fenced accept of
    # the range, the split of the range the lost record broke, the accept of what is left, then the
    # results with their attempts, their finishes counted and announced.)
    assert [q.split()[0] for q in sent] == ["BEGIN", "COMMIT", "DELETE", "SELECT", "DELETE", "WITH"]
    assert sent[-1] == storage.SUCCEED_TASKS
    kept, lost, other = (r.refresh() for r in results)
    assert (kept.state, kept.return_value, other.state, other.return_value) == ("succeeded", 1, "succeeded", 3)
    assert [a.outcome for a in kept.attempts()] == ["succeeded"]
    assert [a.ended_at is not None for a in kept.attempts()] == [True]
    # The refused one: nothing written, it runs again where its record is now.
    assert (lost.row.state, lost.row.return_value, lost.row.finished_at) == ("running", None, None)
    assert [a.outcome for a in lost.attempts()] == ["running"]
    assert bare.recorded == 2
    remaining = engine_models.ShareDelivery.objects.filter(group_id=bare.consumer.group_row.id)
    assert [(d.offset, d.member_id) for d in remaining] == [(started[1].record.offset, "another-member")]


def test_records_that_are_not_first_deliveries_start_one_by_one_beside_a_batch(bare):
    fresh, again = sample.add.enqueue(1, 1), sample.add.enqueue(2, 2)
    models.TaskResult.objects.filter(id=again.id).update(state="running", attempts=1)
    models.TaskAttempt.objects.create(task_id=again.id, number=1, worker="gone/1")
    started = bare._dispatch_many(bare.consumer.poll(timeout=0, max_records=10))
    assert [r.job.attempt for r in started] == [1, 2]
    assert [(a.number, a.outcome) for a in again.attempts()] == [(1, "lost"), (2, "running")]
    assert again.refresh().row.lost == 1
    assert [(a.number, a.outcome) for a in fresh.attempts()] == [(1, "running")]


def run_until(loop, condition, timeout=60):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        loop.run_once()


def test_a_child_runs_a_batch_and_every_outcome_is_recorded(bare):
    bare.consumer.close()
    loop = worker.TaskWorker("sample", concurrency=1, poll_timeout=0.1)
    try:
        loop._run_s = 0.0001  # as after a run of quick tasks: the next poll takes a full batch
        results = [sample.add.enqueue(n, 2) for n in range(20)]
        batches = []
        original = loop._send

        def send(free, started):
            batches.append(len(started))
            original(free, started)

        loop._send = send
        run_until(loop, lambda: all(r.refresh().finished for r in results))
        assert max(batches) > 1
        assert [r.return_value for r in results] == [n + 2 for n in range(20)]
        assert all([(a.number, a.outcome) for a in r.attempts()] == [(1, "succeeded")] for r in results)
    finally:
        loop.stop()
        loop.close()


def test_a_slow_job_hands_back_those_behind_it_and_the_outcomes_before_it_are_recorded_meanwhile(bare, tmp_path):
    """A batch is made of jobs expected to be quick: one that runs long must neither hold up the
    jobs behind it in its batch (handed back, they run in the other process) nor keep the outcomes
    of those before it from being recorded until it ends."""
    bare.consumer.close()
    loop = worker.TaskWorker("sample", concurrency=2, poll_timeout=0.1)
    gate = tmp_path / "gate"
    try:
        run_until(loop, lambda: loop.slots and all(s.ready for s in loop.slots))
        loop._run_s = 0.0001  # quick tasks seen: a poll takes a batch for each process
        before = sample.add.enqueue(1, 1)
        slow = sample.gated.enqueue(str(gate))
        behind = [sample.add.enqueue(n, 10) for n in range(6)]
        run_until(loop, lambda: before.refresh().finished and all(r.refresh().finished for r in behind))
        assert slow.refresh().state == "running"  # all of them recorded while the slow one runs
        assert before.return_value == 2 and [r.return_value for r in behind] == [n + 10 for n in range(6)]
        gate.touch()
        run_until(loop, lambda: slow.refresh().finished)
        assert (slow.state, slow.return_value) == ("succeeded", str(gate))
        assert [a.outcome for a in slow.attempts()] == ["succeeded"]
    finally:
        loop.stop()
        loop.close()


def test_a_batch_whose_child_is_killed_midway_keeps_what_came_and_hands_back_the_rest(bare):
    """Guards: the hard time limit kills the child running a batch; the jobs before it keep their
    outcomes, the runaway fails, and the jobs it never started run again (their attempts interrupted)."""
    bare.consumer.close()
    loop = worker.TaskWorker("sample", concurrency=1, poll_timeout=0.1)
    try:
        loop._run_s = 0.0001
        before, runaway, after = sample.add.enqueue(1, 1), sample.runaway.enqueue(), sample.add.enqueue(2, 2)
        run_until(loop, lambda: all(r.refresh().finished for r in (before, runaway, after)))
        assert (before.state, before.return_value, after.state, after.return_value) == ("succeeded", 2, "succeeded", 4)
        assert runaway.state == "failed"
        assert runaway.error[0] == "scheduler.exceptions.HardTimeLimitExceeded"
        assert [a.outcome for a in before.attempts()] == ["succeeded"]
        # In the runaway's batch (started after it) or alone, after's last attempt succeeded.
        assert [a.outcome for a in after.attempts()][-1] == "succeeded"
        assert set(a.outcome for a in after.attempts()[:-1]) <= {"interrupted"}
    finally:
        loop.stop()
        loop.close()


def test_ending_a_batch_of_attempts_reads_the_indexes_under_statistics_from_a_small_table(db):
    """A drain grows the attempts table faster than ANALYZE follows: succeed_tasks must find the
    attempts it ends by index even when the statistics say the table is nearly empty and every
    attempt is running."""
    import json as json_module

    from django.db import connection

    from scheduler import models as task_models
    ids = [str(r.id) for r in sample.add.enqueue_many([((n,), {"b": n}) for n in range(64)])]
    insert = """INSERT INTO scheduler_taskattempt (task_id, number, worker, started_at, outcome, error_class,
                                                   error_message, traceback)
                SELECT gen_random_uuid(), 1, 'w', now(), 'succeeded', '', '', '' FROM generate_series(1, %s)"""
    with connection.cursor() as cursor:
        # Early in a drain: a few hundred attempts ended, a batch running, and ANALYZE runs.
        cursor.execute(insert, [500])
        task_models.TaskAttempt.objects.bulk_create(task_models.TaskAttempt(task_id=i, number=1, worker="w")
                                                    for i in ids)
        cursor.execute("ANALYZE scheduler_taskattempt")
        # Then the drain goes on: thousands of attempts the statistics do not count.
        cursor.execute(insert, [30000])
        cursor.execute("EXPLAIN (FORMAT JSON) " + storage.SUCCEED_TASKS,
                       {"ids": "{" + ",".join(ids) + "}", "numbers": "{" + ",".join("1" * len(ids)) + "}",
                        "values": json_module.dumps([None] * len(ids))})
        plan = cursor.fetchone()[0]

    def scans(node):
        yield node["Node Type"], node.get("Relation Name")
        for child in node.get("Plans", []):
            yield from scans(child)

    found = list(scans(plan[0]["Plan"]))
    assert ("Index Scan", "scheduler_taskattempt") in found or ("Index Only Scan", "scheduler_taskattempt") in found
    assert ("Seq Scan", "scheduler_taskattempt") not in found, json_module.dumps(plan)


@pytest.mark.django_db(transaction=True)
def test_a_batch_of_successes_stores_each_value_ends_each_attempt_and_wakes_each_waiter():
    """succeed_tasks writes every task of a batch its own value (None as NULL, as the ORM does),
    ends each one's running attempt, and notifies each task's channel on the key Result.wait holds
    (computed from the id as storage.finish_key and finish_channel do), and counts them."""
    import psycopg

    results = sample.add.enqueue_many([((n,), {"b": n}) for n in range(3)])
    ids = [str(r.id) for r in results]
    rows = storage.start_tasks(ids=ids, generations=[1, 1, 1], names=[sample.add.name], max_lost=3, worker="w")
    assert sorted(str(r[0]) for r in rows) == sorted(ids)
    dsn = connection.get_connection_params()
    waiter = psycopg.connect(dbname=dsn["dbname"], host=dsn.get("host"), port=dsn.get("port"), user=dsn.get("user"),
                             autocommit=True)
    try:
        # Two waiters (the key held shared, the channel listened to); the third task has none.
        for task_id in ids[:2]:
            waiter.execute("SELECT pg_advisory_lock_shared(1397511938, %s)", [storage.finish_key(task_id)])
            waiter.execute(f"LISTEN {storage.finish_channel(task_id)}")
        with transaction.atomic():
            storage.succeed_tasks([(ids[0], 1, {"sum": 3}), (ids[1], 1, None), (ids[2], 1, [1, "two"])])
        heard = {n.channel for n in waiter.notifies(timeout=5, stop_after=2)}
    finally:
        waiter.close()
    assert heard == {storage.finish_channel(i) for i in ids[:2]}
    stored = {str(r.id): r for r in models.TaskResult.objects.filter(id__in=ids)}
    assert [stored[i].state for i in ids] == ["succeeded"] * 3
    assert [stored[i].return_value for i in ids] == [{"sum": 3}, None, [1, "two"]]
    assert models.TaskResult.objects.filter(id=ids[1], return_value__isnull=True).exists()
    assert sum(c.count for c in models.TaskFinishCount.objects.filter(queue="sample", state="succeeded")) == 3
    attempts = models.TaskAttempt.objects.filter(task_id__in=ids)
    assert sorted((str(a.task_id), a.outcome, a.ended_at is not None) for a in attempts) == sorted(
        (i, "succeeded", True) for i in ids)


def _show_commit_level():
    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        return cursor.fetchone()[0]


@pytest.mark.django_db(transaction=True)
def test_a_batch_start_skips_the_wal_flush_only_in_a_transaction_of_its_own():
    """start_tasks sets synchronous_commit off for its own transaction alone: neither the session
    nor a caller's transaction around it is left without the flush."""
    from scheduler import storage

    results = sample.add.enqueue_many([((n,), {"b": n}) for n in range(3)])
    session = _show_commit_level()

    def start(result):
        return storage.start_tasks(ids=[str(result.id)], generations=[1], names=[sample.add.name], max_lost=3,
                                   worker="w")

    assert len(start(results[0])) == 1  # in autocommit: its own transaction
    assert _show_commit_level() == session
    with transaction.atomic():
        assert len(start(results[1])) == 1
        assert _show_commit_level() == session  # the caller's transaction keeps its level
    assert models.TaskResult.objects.filter(state="running").count() == 2
