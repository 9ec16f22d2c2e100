"""/healthz, /readyz and /metrics: what monitoring reads, parsed as Prometheus parses it."""
import datetime
import time

import pytest
from django.db import connection
from django.db.migrations.recorder import MigrationRecorder
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from ops import health, metrics
from outbox import half, models as outbox_models, outbox
from queueing import models, producer, registry, topics, worker
from scheduler import models as task_models
from shop import services as shop_services
from tests.conftest import database_url
from tests.sampleapp import tasks as sample


@pytest.fixture(autouse=True)
def fast(settings):
    settings.SLUICE = {**settings.SLUICE, "POLL_FALLBACK_MS": 50, "HEARTBEAT_INTERVAL_MS": 60_000,
                       "BACKOFF_BASE_MS": 1, "BACKOFF_MAX_MS": 2}


def scrape(client):
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def value(samples, name, **labels):
    return samples[name, tuple(sorted(labels.items()))]


def run_group(group, topic_name, handler, until):
    registry.handler(topic_name, group=group)(handler)
    loop = worker.Worker(group, registry.subscriptions(group), poll_timeout=0.1)
    try:
        for _ in range(40):
            loop.run_once()
            if until():
                break
    finally:
        loop.stop()
        loop.consumer.close()
        registry.unregister(group)


def test_metrics_report_offsets_lag_attempts_and_backlogs(db, client):
    topics.create_topic("m.orders", partitions=2)
    producer.send_batch("m.orders", [b"a", b"b", b"c"], partition=0)
    producer.send_batch("m.orders", [b"d", b"e"], partition=1)
    models.ConsumerGroup.objects.create(name="billing", delivery_limit=2)

    def fail_on_b(record):
        if record.value == b"b":
            raise ValueError("card declined")

    run_group("billing", "m.orders", fail_on_b,
              lambda: models.CommittedOffset.objects.filter(group__name="billing", partition=0, offset=3).exists())
    producer.send("m.orders", b"f", partition=1)  # after the group: lag 1 on partition 1
    outbox.publish(aggregate_type="order", aggregate_id="1", event_type="paid", payload={}, destination="sluice:m.orders")
    half.prepare("m.orders", b"pending", producer_group="shop", checker=shop_services.PAYMENT_GROUP)
    producer.send("m.orders", b"later", delay=datetime.timedelta(hours=1))
    sample.add.enqueue(1, 2)

    samples = scrape(client)

    assert value(samples, "sluice_log_end_offset", topic="m.orders", partition="0") == 3
    assert value(samples, "sluice_log_end_offset", topic="m.orders", partition="1") == 3
    assert value(samples, "sluice_records_produced_total", topic="m.orders") == 6
    assert value(samples, "sluice_log_records", topic="m.orders") == 6
    assert value(samples, "sluice_committed_offset", group="billing", topic="m.orders", partition="0") == 3
    assert value(samples, "sluice_committed_offset", group="billing", topic="m.orders", partition="1") == 2
    assert value(samples, "sluice_consumer_lag", group="billing", topic="m.orders") == 1  # partition 1's new record
    assert value(samples, "sluice_records_consumed_total", group="billing", topic="m.orders") == 5
    # delivery limit 2: one failure retried, the second dead-lettered
    assert value(samples, "sluice_delivery_attempts_total", group="billing", outcome="failed") == 1
    assert value(samples, "sluice_delivery_attempts_total", group="billing", outcome="dead_lettered") == 1
    assert value(samples, "sluice_dead_letters_total", group="billing") == 1
    assert value(samples, "sluice_records_produced_total", topic="billing.DLQ") == 1
    models.Partition.objects.filter(topic__name="m.orders", number=0).update(log_start_offset=2)  # as retention does
    assert value(scrape(client), "sluice_log_records", topic="m.orders") == 4
    assert value(samples, "sluice_outbox_backlog") == 1
    assert value(samples, "sluice_half_messages_prepared") == 1
    assert value(samples, "sluice_delayed_records") == 1
    assert value(samples, "sluice_delayed_overdue_seconds") == 0
    assert value(samples, "sluice_tasks_unfinished", queue="sample", state="queued") == 1
    assert value(samples, "sluice_workers_alive", group="billing", kind="consumer") == 0  # it left


def test_attempt_counters_match_the_attempts_recorded(db, client):
    """The trigger's counters agree with the attempt rows, bulk inserts included."""
    rows = [models.DeliveryAttempt(group_name="g", topic_name="t", partition=0, offset=n, attempt=1,
                                   outcome=outcome) for n, outcome in enumerate(["expired"] * 3 + ["released"])]
    models.DeliveryAttempt.objects.bulk_create(rows)
    models.DeliveryAttempt.objects.create(group_name="g", topic_name="t", partition=0, offset=9, attempt=2,
                                          outcome="expired")
    samples = scrape(client)
    for outcome in ("expired", "released"):
        expected = models.DeliveryAttempt.objects.filter(group_name="g", outcome=outcome).count()
        assert value(samples, "sluice_delivery_attempts_total", group="g", outcome=outcome) == expected


def test_finished_tasks_and_ages_come_from_the_recent_window(db, client):
    from scheduler import storage

    now = timezone.now()
    done = [task_models.TaskResult.objects.create(
        task_name="x", queue="q", state=state, started_at=now - datetime.timedelta(seconds=seconds + 5),
        finished_at=now - datetime.timedelta(seconds=5)) for seconds, state in [(2, "succeeded"), (4, "succeeded"),
                                                                               (1, "failed")]]
    done.append(task_models.TaskResult.objects.create(task_name="x", queue="q", state="succeeded",
                                                      started_at=now - datetime.timedelta(days=2),
                                                      finished_at=now - datetime.timedelta(days=1)))  # too old
    storage.finished([r.id for r in done])  # as the transactions that finish tasks do
    outbox.publish(aggregate_type="a", aggregate_id="1", event_type="e", payload={}, destination="sluice:x")
    outbox_models.OutboxEvent.objects.update(created_at=now - datetime.timedelta(minutes=10))
    samples = scrape(client)
    assert value(samples, "sluice_tasks_finished_recent", queue="q", state="succeeded") == 2
    assert value(samples, "sluice_task_run_seconds_recent_sum", queue="q", state="succeeded") == pytest.approx(6)
    assert value(samples, "sluice_task_run_seconds_recent_max", queue="q", state="succeeded") == pytest.approx(4)
    assert value(samples, "sluice_tasks_finished_recent", queue="q", state="failed") == 1
    assert 600 <= value(samples, "sluice_outbox_oldest_age_seconds") < 3600


@pytest.mark.django_db(transaction=True)
def test_finish_counts_follow_every_way_a_task_finishes_and_agree_with_the_tasks(client, tmp_path):
    """The finish counts follow a worker's batch of successes, a failure, a cancel, a task run again
    by hand (it finishes twice); the scrape's sums equal the tasks' own figures; a finished task
    updated again is not counted again."""
    from scheduler import control, worker as task_worker

    adds = [sample.add.enqueue(n, 1) for n in range(5)]
    broken = sample.broken.enqueue("no")  # a ValueError: not retried
    cancelled = sample.add.using(countdown=3600).enqueue(1, 1)
    control.cancel(cancelled.id)
    loop = task_worker.TaskWorker("sample", concurrency=1, poll_timeout=0.1)
    try:
        deadline = time.monotonic() + 60
        while not all(r.refresh().finished for r in [*adds, broken]):
            assert time.monotonic() < deadline, "the tasks did not finish"
            loop.run_once()
        control.retry(broken.id)
        while broken.refresh().state != "failed":
            assert time.monotonic() < deadline, "the task run again did not fail"
            loop.run_once()
    finally:
        loop.stop()
        loop.close()
    task_models.TaskResult.objects.filter(id=adds[0].id).update(progress_message="touched after")  # not a finish
    samples = scrape(client)
    assert value(samples, "sluice_tasks_finished_recent", queue="sample", state="succeeded") == 5
    assert value(samples, "sluice_tasks_finished_recent", queue="sample", state="failed") == 2  # twice
    assert value(samples, "sluice_tasks_finished_recent", queue="sample", state="cancelled") == 1
    succeeded = task_models.TaskResult.objects.filter(state="succeeded")
    runs = [(r.finished_at - r.started_at).total_seconds() for r in succeeded]
    assert value(samples, "sluice_task_run_seconds_recent_sum", queue="sample", state="succeeded") == pytest.approx(
        sum(runs))
    assert value(samples, "sluice_task_run_seconds_recent_max", queue="sample", state="succeeded") == pytest.approx(
        max(runs))


def test_finish_counts_older_than_an_hour_are_pruned(db):
    from scheduler import control

    now = timezone.now()
    for minutes in (5, 59, 61, 600):
        task_models.TaskFinishCount.objects.create(queue="q", state="succeeded", shard=0, count=1, run_seconds=0,
                                                   period=now - datetime.timedelta(minutes=minutes))
    control.prune()
    left = sorted(round((now - c.period).total_seconds() / 60) for c in task_models.TaskFinishCount.objects.all())
    assert left == [5, 59]


def test_a_scrape_runs_the_same_queries_whatever_the_state(db, client):
    """Guards the scrape's cost: a fixed number of queries, none of them over the log's records."""
    def queries():
        with CaptureQueriesContext(connection) as captured:
            assert client.get("/metrics").status_code == 200
        return [q["sql"] for q in captured.captured_queries]

    empty = queries()
    for n in range(5):
        topics.create_topic(f"m.t{n}", partitions=4)
        producer.send_batch(f"m.t{n}", [b"x"] * 20, partition=n % 4)
        models.ConsumerGroup.objects.create(name=f"g{n}")
    full = queries()
    assert len(empty) == len(full) == metrics.QUERIES
    assert not [sql for sql in full if "queueing_record" in sql]


def test_metrics_need_the_token_when_one_is_set(db, client, settings):
    settings.SLUICE_METRICS_TOKEN = "s3cret"
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_healthz_answers_without_the_database(db, client, django_assert_num_queries):
    with django_assert_num_queries(0):
        response = client.get("/healthz")
    assert (response.status_code, response.content) == (200, b"ok\n")


def test_readyz_is_ready_on_a_migrated_database(db, client):
    assert client.get("/readyz").status_code == 200


def test_readyz_fails_while_a_migration_is_not_applied(db, client):
    MigrationRecorder.Migration.objects.filter(app="queueing", name="0006_delivery_attempt_counts").delete()
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.content == b"1 migration(s) not applied: queueing.0006_delivery_attempt_counts\n"


def test_readyz_fails_on_an_unmigrated_database(db, manage):
    """A database created and never migrated: 503, and why, from a process that uses it."""
    name = f"{connection.settings_dict['NAME']}_unmigrated"
    with connection._nodb_cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}"')
        cursor.execute(f'CREATE DATABASE "{name}"')
    try:
        script = "from django.test import Client; r = Client().get('/readyz'); print(r.status_code, r.content.decode())"
        result = manage("shell", "-c", script, env={"DATABASE_URL": database_url(name), "ALLOWED_HOSTS": "testserver"})
    finally:
        with connection._nodb_cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}"')
    assert result.returncode == 0, result.stderr
    status, reason = result.stdout.strip().splitlines()[-1].split(" ", 1)
    assert status == "503"
    assert reason.startswith(f"{len(health._known_migrations())} migration(s) not applied: ")


def test_readyz_fails_when_the_database_does_not_answer(manage):
    """Port 1 of localhost: nothing listens there, so the connection is refused at once."""
    script = "from django.test import Client; r = Client().get('/readyz'); print(r.status_code, r.content.decode())"
    result = manage("shell", "-c", script, env={"DATABASE_URL": "postgres://postgres@127.0.0.1:1/sluice",
                                                "ALLOWED_HOSTS": "testserver"})
    assert result.returncode == 0, result.stderr
    status, reason = result.stdout.strip().splitlines()[-1].split(" ", 1)
    assert status == "503" and reason.startswith("database unreachable: ")
