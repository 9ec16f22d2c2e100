"""The log becomes a table partitioned by time: segments that retention drops whole.

Rows land in the segment of their timestamp (the append's transaction time); a DEFAULT partition
takes anything no segment covers, so an append never fails. The primary key has to include the
partition key; dense offsets never relied on it (the append lock guarantees them).
"""
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

# After the first segments exist, so rows of their time go into them rather than the default.
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


def first_segments(apps, schema_editor):
    from queueing import retention

    retention.ensure_segments()


class Migration(migrations.Migration):
    dependencies = [("queueing", "0003_share_ranges")]

    operations = [
        migrations.RunSQL(FORWARD, BACKWARD),
        migrations.RunPython(first_segments, migrations.RunPython.noop),
        migrations.RunSQL(COPY, migrations.RunSQL.noop),
    ]
