"""Raw SQL of delayed records: storing them, and moving due ones into the log with the time of the
next one."""
from psycopg.types.json import Jsonb

from queueing import partitioner, types
from queueing.sql import queries
from queueing.storage.log import appending, cursor, fetch_one_as_acks_all, run

MOVE_DUE = appending(queries["move_due"])


def schedule_record(*, topic_id, partition, record, deliver_at):
    """Store an encoded record to enter the log at deliver_at (caller's transaction, if any), waking
    a waiting mover at commit; return its id. A keyed record with no partition keeps its key's
    hash, which places it when due."""
    key_hash = partitioner.murmur2(record.key) if partition is None and record.key is not None else None
    return run(cursor(), "schedule_record", {
        "topic_id": topic_id, "partition": partition, "key": record.key, "key_hash": key_hash, "value": record.value,
        "value_format": record.value_format, "headers": Jsonb(record.headers) if record.headers else None,
        "deliver_at": deliver_at, "payload": deliver_at.isoformat(),
    }).fetchone()[0]


def move_due(*, limit):
    """Append up to limit due records to the log and take them out of the waiting table, in one
    statement (its own transaction in autocommit, or the caller's); return (how many moved, the
    seconds until the earliest record left is due, its deliver_at), the last two None if none is
    left. Commits as acks=all does."""
    params = {"limit": limit, "id_header": types.DELAYED_ID, "due_header": types.DELAYED_DELIVER_AT}
    return fetch_one_as_acks_all(cursor(), MOVE_DUE, params)
