"""The console's pages and the landing page at scale: their answer time with an empty log and with a
full one, against the goal of 300 ms, on bench/metrics.py's build.

Usage: DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres python bench/console.py
    [--topics 500] [--partitions 8] [--groups 200] [--records 10000000] [--scrapes 15]
It builds what bench/metrics.py builds (in its own database, sluice_bench_console, dropped at the
end), adds what the remaining pages show (a dead-letter topic with 2,000 dead letters, 200 half
messages, 2,000 delayed records, 200 schedules, 2,000 audit entries, 20 lag samples of every group),
and times every page through Django's test client, signed in as a staff user holding only
console.view_console (not a superuser).
"""
import datetime
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import metrics  # noqa: E402  (bench/metrics.py: the build, the fill, the timing and the table)

GROUP, SHARE, DLQ = "bench.g000", "bench.s00", "bench.g000.DLQ"
PAGES = [
    "/", "/console/", "/console/overview.json", "/console/topics/", "/console/topics/bench.t000/messages/",
    "/console/topics/bench.t000/messages/?partition=3&offset=1000",
    "/console/groups/", f"/console/groups/{GROUP}/", f"/console/groups/{GROUP}/lag.json",
    f"/console/share-groups/{SHARE}/", f"/console/groups/{GROUP}/reset/",
    f"/console/groups/{GROUP}/reset/?scenario=to_latest", "/console/retries/", "/console/dead-letters/",
    f"/console/dead-letters/{DLQ}/", f"/console/dead-letters/{DLQ}/?open=10", "/console/half-messages/",
    "/console/outbox/", "/console/delayed/", "/console/tasks/", "/console/schedules/", "/console/audit/",
]


def prepare(names):
    """The rows the console's other pages show; returns a staff user with console.view_console."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Permission
    from django.utils import timezone

    from console import lag
    from console import models as console_models
    from outbox import half
    from queueing import models, producer, topics, types
    from scheduler import models as task_models

    topics.create_topic(DLQ, partitions=1)
    for start in range(0, 2000, 500):
        producer.send_batch(DLQ, [b"x" * 60] * 500, partition=0, headers={
            types.DLQ_ORIGINAL_TOPIC: names[0], types.DLQ_ORIGINAL_PARTITION: "0",
            types.DLQ_ORIGINAL_OFFSET: "10", types.DLQ_GROUP: GROUP, types.DLQ_ATTEMPTS: "3",
            types.DLQ_ERROR: "bench"})
    half.checker("bench")(lambda message: "unknown")
    for n in range(200):
        half.prepare(names[n % len(names)], b"x" * 60, producer_group="bench", checker="bench")
    now = timezone.now()
    topic = models.Topic.objects.get(name=names[0])
    models.DelayedRecord.objects.bulk_create(
        models.DelayedRecord(topic=topic, value=b"x", deliver_at=now + datetime.timedelta(minutes=n))
        for n in range(2000))
    task_models.Schedule.objects.bulk_create(
        task_models.Schedule(name=f"bench.sched{n:03d}", task_name="bench.task", kind="cron", cron="*/5 * * * *",
                             next_run_at=now) for n in range(200))
    console_models.AuditEntry.objects.bulk_create(
        console_models.AuditEntry(actor="bench", action="outbox retry now", target="outbox", after={"n": n})
        for n in range(2000))
    for n in range(20):
        lag.sample(now=now - datetime.timedelta(minutes=20 - n))
    user = get_user_model().objects.create_user("viewer", "viewer@example.com", "viewer", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_console"))
    return user


def browser_plan():
    """The message browser reads its 50 records through the engine's own cursor (queueing.storage,
    psycopg binding on the server), which Django's query capture does not see: EXPLAIN ANALYZE that
    statement as the page runs it, from offset 1000 of bench.t000's partition 3, on the full log."""
    from queueing import models
    from queueing.sql import queries
    from queueing.storage import log

    topic_id = models.Topic.objects.get(name="bench.t000").id
    params = {"topic_ids": [topic_id], "partitions": [3], "positions": [1000], "per_partition": 50,
              "group_id": None, "member_id": None, "generation": None, "commit_level": None,
              "commit_topic_ids": [], "commit_partitions": [], "offsets": []}
    plan = log.cursor().execute("EXPLAIN (ANALYZE, FORMAT JSON) " + queries["commit_and_fetch"], params).fetchone()[0]
    plan = plan[0] if isinstance(plan, list) else plan

    def nodes(node):
        yield node
        for child in node.get("Plans", ()):
            yield from nodes(child)

    reads = [n for n in nodes(plan["Plan"]) if n.get("Relation Name", "").startswith("queueing_record")]
    return [f"message browser's read of the log (EXPLAIN ANALYZE, full log, {plan['Execution Time']:.1f} ms):"] + [
        f"  {n['Node Type']} on {n['Relation Name']}" + (f" using {n['Index Name']}" if "Index Name" in n else "")
        + f": {n.get('Actual Rows', 0)} rows ({n.get('Plan Rows')} estimated)" for n in reads]


def main():
    args = metrics.arguments(__doc__.splitlines()[0], "sluice_bench_console").parse_args()
    metrics.report(metrics.run(args, PAGES, prepare, browser_plan), args, width=58)


if __name__ == "__main__":
    main()
