"""Guards on the named queries: each is used, and the hot reads keep their index plans."""
import json
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


def test_fetch_records_reads_the_primary_key_range(db, topic):
    from queueing import storage

    producer.send_batch(topic.name, [b"x"] * 50, partition=0)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE queueing_record")
        cursor.execute("SET LOCAL enable_seqscan = off")
    params = {"topic_ids": [topic.id], "partitions": [0], "positions": [10], "per_partition": 5}
    row = storage.cursor().execute("EXPLAIN (FORMAT JSON) " + sql.queries["fetch_records"], params).fetchone()
    text = json.dumps(row[0])
    # Each time segment is read by its primary-key index (its name: <segment>_pkey), already in
    # offset order, merged rather than sorted.
    assert "_pkey" in text and '"Node Type": "Seq Scan"' not in text
    assert '"Node Type": "Sort"' not in text
