"""Raw SQL of the log: appends, fetches, offset commits."""
import itertools

import psycopg
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connection, connections, transaction
from psycopg.types.json import Jsonb, JsonbBinaryLoader, JsonbLoader

from queueing import exceptions, types
from queueing.sql import queries


def cursor():
    """A server-side-binding cursor on Django's connection, so it joins the caller's transaction.

    Django's own cursors interpolate parameters on the client; binding on the server sends bytea
    arrays in binary, which is what makes batched appends cheap.
    """
    # Looked up once: every attribute read through django.db.connection is a thread-local lookup,
    # and a single send is short enough for those to show.
    db = connections[DEFAULT_DB_ALIAS]
    raw = db.connection
    if raw is None:
        db.ensure_connection()
        raw = db.connection
    cached = getattr(raw, "_sluice_cursor", None)
    if cached is None or cached.closed:
        # One per connection: building a cursor copies the adapters map, which costs on a hot path.
        if settings.SLUICE["PREPARED_STATEMENTS"]:
            # Django turns psycopg's prepared statements off (prepare_threshold None); its own cursors
            # bind on the client and never prepare, so this only concerns the hot-path queries here:
            # few and fixed, prepared once per connection after a few runs (planning a query on the
            # time-segmented log costs more than running it). SLUICE_PREPARED_STATEMENTS=0 behind a
            # transaction-mode pooler.
            raw.prepare_threshold = 2
        cached = psycopg.Cursor(raw)
        # Django leaves jsonb undecoded for its JSONField; headers are wanted as dicts here.
        cached.adapters.register_loader("jsonb", JsonbLoader)
        cached.adapters.register_loader("jsonb", JsonbBinaryLoader)
        raw._sluice_cursor = cached
        raw._sluice_errors = db.wrap_database_errors  # for run(), without looking the wrapper up again
    return cached


def run(cur, name, params, *, binary=False):
    """Execute a named query; driver errors become Django's, so the connection is marked as failed.

    binary=True asks for results in binary: bytea then arrives without hex decoding. cur is a
    cursor() of this thread's connection.
    """
    with cur.connection._sluice_errors:
        return cur.execute(queries[name], params, binary=binary)


def execute(query, params, *, prepare=None):
    """Execute another app's hot-path query as run() does a named one: on cursor(), so that it is
    bound on the server and prepared after a few runs, with driver errors turned into Django's.

    prepare=False plans it at every run instead, with its parameters' values: for a statement whose
    best plan depends on the tables' sizes at the time, which a plan prepared early (and kept by
    the connection) does not follow as they grow."""
    cur = cursor()
    with cur.connection._sluice_errors:
        return cur.execute(query, params, prepare=prepare)


def _commit_level(cur):
    """Return this connection's synchronous_commit, read once per connection."""
    raw = cur.connection
    level = getattr(raw, "_sluice_synchronous_commit", None)
    if level is None:
        with connection.wrap_database_errors:
            level = cur.execute("SELECT current_setting('synchronous_commit')").fetchone()[0]
        raw._sluice_synchronous_commit = level
    return level


def needs_commit_level(cur, acks):
    """The synchronous_commit a transaction of cur's session must SET LOCAL to commit as acks asks,
    or None when the session's own level already does."""
    wanted = types.SYNCHRONOUS_COMMIT[acks]
    current = _commit_level(cur)
    if wanted == "on":
        # remote_write and remote_apply are at least as strong as on for our purpose.
        return None if current in ("on", "remote_write", "remote_apply") else "on"
    return None if current == wanted else wanted


def fetch_one_as_acks_all(cur, query, params):
    """Run one statement that commits as acks=all and return its row: as it comes (one round trip
    in autocommit, or in the caller's transaction) when the session's synchronous_commit suffices,
    else in a transaction of its own that sets it."""
    level = needs_commit_level(cur, types.Acks.ALL)
    with cur.connection._sluice_errors:
        if level is None:
            return cur.execute(query, params).fetchone()
        with transaction.atomic(savepoint=False):
            cur.execute(f"SET LOCAL synchronous_commit = {level}")
            return cur.execute(query, params).fetchone()


COPY_FROM = 64  # batches this large are written with COPY, below it one INSERT statement
_COPY = (
    'COPY queueing_record (topic_id, partition, "offset", key, value, value_format, headers, timestamp, '
    "producer_id, sequence) FROM STDIN (FORMAT BINARY)"
)
_COPY_TYPES = ["int8", "int4", "int8", "bytea", "bytea", "int2", "jsonb", "timestamptz", "int8", "int4"]


def append_records(*, topic_id, partition, records, producer_id=None, base_sequence=None, acks=types.Acks.ALL):
    """Append records to one partition and return (base offset, whether it was a retry).

    Runs in the caller's transaction when there is one. With producer_id, a batch whose base
    sequence is the producer's last stored batch is recognised as a retry and not stored again:
    the return is then (base_offset, True). Raises PartitionNotFound, OutOfOrderSequence and
    DuplicateSequence.
    """
    cur = cursor()
    level = needs_commit_level(cur, acks)
    copying = len(records) >= COPY_FROM
    if producer_id is None and level is None and not copying:
        # One statement: in autocommit it is its own transaction, one round trip per send (the
        # psycopg connection's autocommit is Django's: Django sets one from the other). In the
        # caller's transaction it needs no savepoint (two more round trips): it appends all or
        # nothing, and a failure leaves that transaction to the caller, as any ORM statement does.
        if len(records) == 1:
            return _append_one(cur, topic_id, partition, records[0], None, None), False
        return _append(cur, _params(topic_id, partition, records, None, None), records), False
    params = _params(topic_id, partition, records, producer_id, base_sequence)
    with transaction.atomic():
        if level is not None:
            cur.execute(f"SET LOCAL synchronous_commit = {level}")
        if producer_id is not None:
            retried = _check_sequence(cur, params)
            if retried is not None:
                return retried, True
        base_offset = _copy(cur, params, records) if copying else _append(cur, params, records)
        if producer_id is not None:
            run(cur, "save_producer_state",
                {**params, "base_offset": base_offset, "last_sequence": base_sequence + len(records) - 1},
            )
        return base_offset, False


def _params(topic_id, partition, records, producer_id, base_sequence):
    return {
        "topic_id": topic_id,
        "partition": partition,
        "count": len(records),
        "bytes": sum(len(r.value or b"") + len(r.key or b"") for r in records),
        "producer_id": producer_id,
        "base_sequence": base_sequence,
    }


def _append(cur, params, records):
    if len(records) == 1:
        return _append_one(cur, params["topic_id"], params["partition"], records[0], params["producer_id"],
                           params["base_sequence"])
    row = run(cur, "append_records", {
        **params,
        "keys": [r.key for r in records],
        "values": [r.value for r in records],
        "value_formats": [r.value_format for r in records],
        "headers": [Jsonb(r.headers) if r.headers else None for r in records],
    }).fetchone()
    if row is None:
        raise exceptions.PartitionNotFound(topic=params["topic_id"], partition=params["partition"])
    return row[0]


def _append_one(cur, topic_id, partition, record, producer_id, base_sequence):
    row = run(cur, "append_record", {
        "topic_id": topic_id, "partition": partition, "bytes": len(record.value or b"") + len(record.key or b""),
        "key": record.key, "value": record.value, "value_format": record.value_format,
        "header": Jsonb(record.headers) if record.headers else None,
        "producer_id": producer_id, "base_sequence": base_sequence,
    }, binary=True).fetchone()
    if row is None:
        raise exceptions.PartitionNotFound(topic=topic_id, partition=partition)
    return row[0]


def append_partitions(batches, *, also=None):
    """Append records to several partitions in one statement: batches {(topic_id, partition): records}.

    also: (query, params), a data-modifying query of the caller's with %(name)s parameters of its
    own (e.g. marking what the records carry as sent), run in the same statement, so that it and
    the appends take effect together or not at all, for one round trip. Runs in the caller's
    transaction (call it in one: it is all or nothing only with it) and commits as acks=all does.
    Returns {(topic_id, partition): base offset}; raises PartitionNotFound if a partition is
    missing (the others, and also, have then taken effect: the caller rolls back). A batch of
    COPY_FROM records or more gets its offsets from the statement and goes in by COPY after it,
    as append_records' do, under the locks the statement took.
    """
    slots = list(batches)
    copied = {}  # batch number -> records written by COPY after the statement
    params = {"topic_ids": [], "partitions": [], "counts": [], "bytes": [], "batches": [], "positions": [],
              "keys": [], "values": [], "value_formats": [], "headers": []}
    for batch, (topic_id, partition) in enumerate(slots, 1):
        records = batches[(topic_id, partition)]
        params["topic_ids"].append(topic_id)
        params["partitions"].append(partition)
        params["counts"].append(len(records))
        params["bytes"].append(sum(len(r.value or b"") + len(r.key or b"") for r in records))
        if len(records) >= COPY_FROM:
            copied[batch] = records
            continue
        for position, record in enumerate(records):
            params["batches"].append(batch)
            params["positions"].append(position)
            params["keys"].append(record.key)
            params["values"].append(record.value)
            params["value_formats"].append(record.value_format)
            params["headers"].append(Jsonb(record.headers) if record.headers else None)
    cur = cursor()
    level = needs_commit_level(cur, types.Acks.ALL)
    if level is not None:
        with cur.connection._sluice_errors:
            cur.execute(f"SET LOCAL synchronous_commit = {level}")
    if also is None:
        with cur.connection._sluice_errors:
            rows = cur.execute(APPEND_PARTITIONS, params).fetchall()
    else:
        with cur.connection._sluice_errors:
            rows = cur.execute(_along(also[0]), {**also[1], **params}).fetchall()
    if len(rows) < len(slots):
        found = {row[0] for row in rows}
        topic_id, partition = next(slot for batch, slot in enumerate(slots, 1) if batch not in found)
        raise exceptions.PartitionNotFound(topic=topic_id, partition=partition)
    for batch, base_offset, timestamp in rows:
        if batch in copied:
            _copy_rows(cur, *slots[batch - 1], base_offset, timestamp, copied[batch], None, None)
    return {slots[batch - 1]: base_offset for batch, base_offset, _ in rows}


def appending(query):
    """query with the CTEs that append its wanted and source records (append_to_partitions in log.sql)
    in their place."""
    return query.replace("/* append_to_partitions */", queries["append_to_partitions"], 1)


APPEND_PARTITIONS = appending(queries["append_partitions"])
_ALONG = {}  # a caller's query -> append_partitions with it as a first CTE


def _along(query):
    """append_partitions with the caller's data-modifying query as a CTE of its own: PostgreSQL
    runs such a CTE once whether or not the rest reads it. Built once per query."""
    statement = _ALONG.get(query)
    if statement is None:
        base = APPEND_PARTITIONS
        if not base.startswith("WITH wanted AS ("):
            raise RuntimeError("append_partitions no longer has the shape append_partitions(also=) expects")
        statement = _ALONG[query] = base.replace("WITH wanted AS (", f"WITH also AS (\n{query}\n), wanted AS (", 1)
    return statement


def append_selected(ctes, batches, *, topic_id, partition):
    """Run the caller's CTEs (SQL to follow WITH, with %(name)s parameters) and append the records
    their CTE named source selects to the partition, in one statement per batch of parameters
    (append_selected in log.sql says what source gives and how to gate writes on the CTE target).

    batches is an iterable of parameter dicts, read one at a time: several are pipelined, each
    statement sent as soon as its parameters are made, so the database runs one while the caller
    makes the next; they all join one transaction (the caller's, or one of their own). A single
    batch in autocommit is one statement, one round trip. Returns, per batch, (base offset or None,
    the records' timestamp, records appended, whether the partition exists). Commits as acks=all.
    """
    cur = cursor()
    query = _SELECTED.get(ctes)
    if query is None:
        query = _SELECTED[ctes] = queries["append_selected"].replace("/* the caller's CTEs */", ctes, 1)
    place = {"topic_id": topic_id, "partition": partition}
    level = needs_commit_level(cur, types.Acks.ALL)
    batches = iter(batches)
    first = next(batches)
    following = next(batches, None)
    with cur.connection._sluice_errors:
        if following is None and level is None:
            return [cur.execute(query, {**first, **place}).fetchone()]
        with transaction.atomic(savepoint=False), cur.connection.pipeline():
            if level is not None:
                # As append_records does for acks=all: SET LOCAL needs a transaction.
                cur.execute(f"SET LOCAL synchronous_commit = {level}")
            sent = []
            for params in itertools.chain([first], [] if following is None else [following], batches):
                statement = psycopg.Cursor(cur.connection)  # a result of its own in the pipeline
                statement.execute(query, {**params, **place})
                sent.append(statement)
        return [statement.fetchone() for statement in sent]


_SELECTED = {}  # the caller's CTEs -> the statement that runs them with the append


def append_one_selected(ctes, params, *, topic_id, partition, value, value_format):
    """Append one record of value to the partition in one statement with the caller's CTEs, which
    run once the partition's row is locked and may read slot (append_one_selected in log.sql). In
    the caller's transaction or, in autocommit, as one of its own (one round trip). Returns (base
    offset, the record's timestamp), or None, nothing written, when the partition is missing.
    Commits as acks=all."""
    cur = cursor()
    query = _ONE_SELECTED.get(ctes)
    if query is None:
        query = _ONE_SELECTED[ctes] = queries["append_one_selected"].replace("/* the caller's CTEs */", ctes, 1)
    params = {**params, "topic_id": topic_id, "partition": partition, "value": value, "value_format": value_format}
    return fetch_one_as_acks_all(cur, query, params)


_ONE_SELECTED = {}


def _copy(cur, params, records):
    """Reserve offsets under the append lock, then COPY the batch in (caller's transaction)."""
    row = run(cur, "reserve_offsets", params).fetchone()
    if row is None:
        raise exceptions.PartitionNotFound(topic=params["topic_id"], partition=params["partition"])
    base_offset, timestamp, _ = row
    _copy_rows(cur, params["topic_id"], params["partition"], base_offset, timestamp, records,
               params["producer_id"], params["base_sequence"])
    return base_offset


def _copy_rows(cur, topic_id, partition, base_offset, timestamp, records, producer_id, sequence):
    """COPY records in at offsets from base_offset, which the caller reserved under the append lock."""
    with connection.wrap_database_errors, cur.copy(_COPY) as copy:
        copy.set_types(_COPY_TYPES)
        for index, record in enumerate(records):
            copy.write_row((
                topic_id, partition, base_offset + index, record.key, record.value, record.value_format,
                record.headers or None, timestamp, producer_id, None if sequence is None else sequence + index,
            ))


def _check_sequence(cur, params):
    """Return the stored base offset if this batch was stored already, None if it is new."""
    if run(cur, "lock_partition", params).fetchone() is None:
        raise exceptions.PartitionNotFound(topic=params["topic_id"], partition=params["partition"])
    state = run(cur, "producer_state", params).fetchone()
    expected = 0 if state is None else state[1] + 1
    sequence = params["base_sequence"]
    if state is not None and sequence == state[0]:
        return state[2]
    if sequence == expected:
        return None
    error = exceptions.DuplicateSequence if sequence < expected else exceptions.OutOfOrderSequence
    raise error(
        producer_id=params["producer_id"],
        sequence=sequence,
        expected=expected,
        topic=params["topic_id"],
        partition=params["partition"],
    )


def commit_and_fetch(*, positions=None, per_partition=0, commit=None):
    """Store a member's offsets and read records, in one statement; return (stored, rows).

    commit: None, or {"group_id", "member_id", "generation", "offsets": {(topic_id, partition):
    next offset}}. The offsets are stored all or none: none if the generation is stale or the member
    does not own every partition named; stored is True, False, or None when nothing was asked.
    Outside a caller's transaction the commit does not wait for the WAL flush: an offset commit lost
    in a server crash only means records are read again (at least once either way). Inside one (a
    dead letter written with its commit) the caller's durability applies.

    rows: [(topic_id, partition, offset, key, value, value_format, headers, timestamp, stored count)]
    starting at each position of positions {(topic_id, partition): offset}, each partition's rows
    together and in offset order (the count rides on every row so that a poll's hundreds of rows
    are not copied to drop it; fetch_records drops it).
    """
    positions = positions or {}
    slots = list(positions)
    offsets = commit["offsets"] if commit else {}
    keys = list(offsets)
    params = {
        "group_id": commit["group_id"] if commit else None,
        "member_id": commit["member_id"] if commit else None,
        "generation": commit["generation"] if commit else None,
        "commit_topic_ids": [k[0] for k in keys],
        "commit_partitions": [k[1] for k in keys],
        "offsets": [offsets[k] for k in keys],
        "commit_level": None if connection.in_atomic_block else "off",
        "topic_ids": [k[0] for k in slots],
        "partitions": [k[1] for k in slots],
        "positions": [positions[k] for k in slots],
        "per_partition": per_partition,
    }
    rows = run(cursor(), "commit_and_fetch", params, binary=True).fetchall()
    stored = rows[0][8] == len(keys) if keys else None
    return stored, ([] if rows[0][0] is None else rows)


def fetch_records(*, positions, per_partition):
    """Return [(topic_id, partition, offset, key, value, value_format, headers, timestamp)], each
    partition's rows together and in offset order, starting at each position of positions
    {(topic_id, partition): offset}."""
    if not positions:
        return []
    return [row[:8] for row in commit_and_fetch(positions=positions, per_partition=per_partition)[1]]


def commit_offsets(*, group_id, member_id, generation, offsets):
    """Store offsets {(topic_id, partition): next offset} for a member, all or nothing; return
    whether they were stored (see commit_and_fetch)."""
    commit = {"group_id": group_id, "member_id": member_id, "generation": generation, "offsets": offsets}
    return commit_and_fetch(commit=commit)[0]


def offset_for_timestamp(*, topic_id, partition, timestamp):
    """Return the first offset stamped at or after timestamp, or None if there is none."""
    row = run(
        cursor(), "offset_for_timestamp", {"topic_id": topic_id, "partition": partition, "timestamp": timestamp}
    ).fetchone()
    return row[0]
