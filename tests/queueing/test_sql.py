"""Guards on the named queries: each is used, and the hot reads keep their index plans."""
import pathlib

from django.db import connection

from queueing import producer, sql

ENGINE = pathlib.Path(sql.__file__).resolve().parent.parent


def test_every_named_query_is_run_by_storage():
    source = "".join(path.read_text() for path in (ENGINE / "storage").glob("*.py"))
    unused = [name for name in sql.queries if f'"{name}"' not in source]
    assert unused == []


def test_the_loader_reads_names_and_drops_comments():
    parsed = sql.parse("-- name: one --\n-- why\nSELECT 1\n\n-- name: two --\nSELECT 2 -- inline stays\n")
    assert parsed == {"one": "SELECT 1", "two": "SELECT 2 -- inline stays"}


def _nodes(plan):
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def test_the_fetch_reads_the_primary_key_range(db, topic):
    from queueing import storage

    producer.send_batch(topic.name, [b"x"] * 50, partition=0)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE queueing_record")
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                       "WHERE i.inhparent = 'queueing_record'::regclass")
        segments = {row[0] for row in cursor.fetchall()}
    params = {"topic_ids": [topic.id], "partitions": [0], "positions": [10], "per_partition": 5,
              "group_id": None, "member_id": None, "generation": None, "commit_level": None,
              "commit_topic_ids": [], "commit_partitions": [], "offsets": []}
    row = storage.cursor().execute("EXPLAIN (FORMAT JSON) " + sql.queries["commit_and_fetch"], params).fetchone()
    nodes = list(_nodes(row[0][0]["Plan"]))
    scans = {n["Relation Name"]: n for n in nodes if n.get("Relation Name", "").startswith("queueing_record")}
    # The log is partitioned by time: each segment (and the default partition) is read by a range
    # scan of its own primary key, already in offset order, and the runs are merged, not sorted.
    assert set(scans) == segments
    assert all(n["Node Type"] in ("Index Scan", "Index Only Scan") and n["Index Name"] == f"{name}_pkey"
               for name, n in scans.items())
    assert not any(n["Node Type"] == "Sort" for n in nodes)


def test_the_partition_row_has_no_checks_or_triggers(db):
    # Every append updates its partition row: a CHECK or a foreign key's trigger there is evaluated on
    # each of those updates, and each cost a single send about 8 % (queueing/models.py, Partition).
    # NOT NULL is not counted: PostgreSQL 18 lists it in pg_constraint too (contype 'n'), and it is
    # checked in the row itself, as before 18.
    with connection.cursor() as cursor:
        cursor.execute("SELECT conname, contype FROM pg_constraint "
                       "WHERE conrelid = 'queueing_partition'::regclass AND contype NOT IN ('p', 'u', 'n')")
        constraints = cursor.fetchall()
        cursor.execute("SELECT tgname FROM pg_trigger WHERE tgrelid = 'queueing_partition'::regclass")
        triggers = cursor.fetchall()
    assert constraints == [] and triggers == []


def test_a_search_by_key_reads_only_the_primary_key_range_of_its_window(db, topic):
    """Guards the console's search by key: no index on key exists, so the search must stay a range of
    the primary key (topic, partition, offset), bounded by its window, never a scan of the log."""
    import json

    from queueing import models, remote

    producer.send_batch(topic.name, [b"x"] * 50, key="k", partition=0)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE queueing_record")
        cursor.execute("SET LOCAL enable_seqscan = off")  # 50 rows: a scan would be cheaper here, not at scale
    part = models.Partition.objects.get(topic_id=topic.id, number=0)
    plan = json.loads(remote.key_window(part, 40, [b"k"]).explain(format="json"))
    nodes = list(_nodes(plan[0]["Plan"]))
    # Each segment is read through its primary key (an index or a bitmap scan, as the planner likes
    # for its size), with the window's offset range as the index condition; never a sequential scan.
    assert not [n for n in nodes if n["Node Type"] == "Seq Scan"]
    probes = [n for n in nodes if n["Node Type"] in ("Index Scan", "Index Only Scan", "Bitmap Index Scan")]
    assert probes and all(n["Index Name"].startswith("queueing_record") and n["Index Name"].endswith("_pkey")
                          and '"offset" >= ' in n["Index Cond"] and '"offset" < ' in n["Index Cond"] for n in probes)
