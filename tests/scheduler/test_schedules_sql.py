"""Guards on the schedules' named queries: each is run by storage, and the claim reads the partial
index of due schedules."""
import pathlib

from django.db import connection

from scheduler import sql

SCHEDULER = pathlib.Path(sql.__file__).resolve().parent.parent


def test_every_named_query_is_run_by_storage():
    source = (SCHEDULER / "storage.py").read_text()
    assert [name for name in sql.queries if f'queries["{name}"]' not in source] == []


def _nodes(plan):
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def test_the_claim_reads_the_index_of_due_schedules(db):
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("EXPLAIN (FORMAT JSON) " + sql.queries["claim_due_schedules"], {"limit": 100})
        plan = cursor.fetchone()[0]
    nodes = list(_nodes(plan[0]["Plan"]))
    assert not any(n["Node Type"] == "Seq Scan" for n in nodes), nodes
    assert {n.get("Index Name") for n in nodes} - {None} == {"schedule_due"}, nodes
