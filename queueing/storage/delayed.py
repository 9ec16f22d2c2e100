"""Raw SQL of delayed records: storing them, and claiming due ones for the mover with the time of
the next one."""
from psycopg.types.json import Jsonb

from queueing.storage.log import cursor, run


def schedule_record(*, topic_id, partition, record, deliver_at):
    """Store an encoded record to enter the log at deliver_at (caller's transaction, if any), waking
    a waiting mover at commit; return its id."""
    return run(cursor(), "schedule_record", {
        "topic_id": topic_id, "partition": partition, "key": record.key, "value": record.value,
        "value_format": record.value_format, "headers": Jsonb(record.headers) if record.headers else None,
        "deliver_at": deliver_at, "payload": deliver_at.isoformat(),
    }).fetchone()[0]


def claim_due(*, limit):
    """Delete and return up to limit due records, earliest first (run inside the caller's
    transaction), with the seconds until the earliest record left is due and its deliver_at
    (None, None if none is left): (rows, seconds, deliver_at)."""
    rows = run(cursor(), "claim_due", {"limit": limit}, binary=True).fetchall()
    seconds, deliver_at = rows[0][-2:]
    return [row[:-2] for row in rows if row[0] is not None], seconds, deliver_at
