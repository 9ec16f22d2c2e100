"""The log becomes a table partitioned by time: segments that retention drops whole.

Rows land in the segment of their timestamp (the append's transaction time); a DEFAULT partition
takes anything no segment covers, so an append never fails. The primary key has to include the
partition key, so the table's is (topic_id, partition, offset, timestamp); offsets stay unique per
partition because the append lock hands them out, never because of the key. The model keeps its
logical key (topic_id, partition, offset): Django's state does not change, only the table.

Existing records go into one segment covering their time, so the default partition starts empty
(each later segment creation scans it under a lock on the log). This migration is self-contained
on purpose; the retention loop (queueing/retention.py) creates the segments from then on.
"""
import datetime

from django.conf import settings
from django.db import migrations

FORWARD = """
ALTER TABLE queueing_record RENAME TO queueing_record_old;
ALTER TABLE queueing_record_old RENAME CONSTRAINT queueing_record_pkey TO queueing_record_old_pkey;
ALTER INDEX record_timestamp_brin RENAME TO record_timestamp_brin_old;
CREATE TABLE queueing_record (
    topic_id bigint NOT NULL,
    partition integer NOT NULL,
    "offset" bigint NOT NULL,
    key bytea NULL,
    value bytea NULL,
    value_format smallint NOT NULL,
    headers jsonb NULL,
    "timestamp" timestamptz NOT NULL,
    producer_id bigint NULL,
    sequence integer NULL,
    CONSTRAINT queueing_record_pkey PRIMARY KEY (topic_id, partition, "offset", "timestamp")
) PARTITION BY RANGE ("timestamp");
CREATE TABLE queueing_record_default PARTITION OF queueing_record DEFAULT;
CREATE INDEX record_timestamp_brin ON queueing_record USING brin ("timestamp");
"""

# After the segments exist, so every row goes into one of them rather than the default.
COPY = """
INSERT INTO queueing_record (topic_id, partition, "offset", key, value, value_format, headers, "timestamp",
                             producer_id, sequence)
SELECT topic_id, partition, "offset", key, value, value_format, headers, "timestamp", producer_id, sequence
  FROM queueing_record_old;
DROP TABLE queueing_record_old;
"""

BACKWARD = """
ALTER TABLE queueing_record RENAME TO queueing_record_segmented;
ALTER TABLE queueing_record_segmented RENAME CONSTRAINT queueing_record_pkey TO queueing_record_segmented_pkey;
ALTER INDEX record_timestamp_brin RENAME TO record_timestamp_brin_segmented;
CREATE TABLE queueing_record (LIKE queueing_record_segmented INCLUDING DEFAULTS);
ALTER TABLE queueing_record ADD CONSTRAINT queueing_record_pkey PRIMARY KEY (topic_id, partition, "offset");
CREATE INDEX record_timestamp_brin ON queueing_record USING brin ("timestamp");
INSERT INTO queueing_record SELECT * FROM queueing_record_segmented;
DROP TABLE queueing_record_segmented;
"""

EPOCH = datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)  # as in queueing/retention.py
AHEAD = 2


def first_segments(apps, schema_editor):
    span = datetime.timedelta(milliseconds=settings.SLUICE.get("SEGMENT_MS", 24 * 3600 * 1000))
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SELECT now(), min(timestamp), max(timestamp) FROM queueing_record_old")
        now, oldest, newest = cursor.fetchone()
        current = EPOCH + ((now - EPOCH) // span) * span
        bounds = [(current + n * span, current + (n + 1) * span) for n in range(AHEAD + 1)]
        if oldest is not None and oldest < current:
            bounds.insert(0, (EPOCH + ((oldest - EPOCH) // span) * span, current))
        if newest is not None and newest >= bounds[-1][1]:
            bounds.append((bounds[-1][1], newest + span))  # clocks ahead of the server's: keep the default empty
        for start, end in bounds:
            name = f"queueing_record_s{start.astimezone(datetime.UTC):%Y%m%d%H%M%S}"
            cursor.execute(
                f'CREATE TABLE "{name}" PARTITION OF queueing_record '
                f"FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
            )


class Migration(migrations.Migration):
    dependencies = [("queueing", "0003_share_ranges")]

    operations = [
        migrations.RunSQL(FORWARD, BACKWARD),
        migrations.RunPython(first_segments, migrations.RunPython.noop),
        migrations.RunSQL(COPY, migrations.RunSQL.noop),
    ]
