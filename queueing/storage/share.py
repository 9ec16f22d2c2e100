"""Raw SQL of share groups: one call per partition to accept and acquire; fenced acknowledgements."""
import dataclasses

from django.db import connection

from queueing.storage.log import cursor, run

DELIVERED, DEAD, REFUSED, EXPIRED = 1, 2, 3, 4


@dataclasses.dataclass(frozen=True, kw_only=True)
class Polled:
    """What one sluice_share_poll call produced on a partition."""

    records: list  # (offset, key, value, value_format, headers, timestamp, delivery_count)
    dead: list  # (offset, delivery_count): past the delivery limit, for the caller to dead-letter
    refused: list  # accepted offsets the member no longer held
    expired: list  # (offset, delivery_count, previous member): locks that ran out, delivered again


def ensure_share_partitions(*, group_id, topic_id, earliest):
    run(cursor(), "ensure_share_partitions", {"group_id": group_id, "topic_id": topic_id, "earliest": earliest})


def poll(*, group_id, topic_id, partition, member_id, limit, lock_ms, delivery_limit, accept=(), durable=True):
    """Accept [(offset, delivery_count)] and acquire up to limit records of one partition (limit 0:
    accept only). One statement, so in autocommit it is its own short transaction. Not durable (and
    outside a caller's transaction), its commit does not wait for the WAL flush, as an offset commit:
    lost in a server crash, an acquisition or an acceptance only means the records are delivered
    again (at least once either way)."""
    rows = run(cursor(), "share_poll", {
        "group_id": group_id, "topic_id": topic_id, "partition": partition, "member_id": member_id,
        "limit": limit, "lock_ms": lock_ms, "delivery_limit": delivery_limit,
        "accept": [a[0] for a in accept], "accept_counts": [a[1] for a in accept],
        "commit_level": None if durable or connection.in_atomic_block else "off",
    }, binary=True).fetchall()
    records, dead, refused, expired = [], [], [], []
    for kind, offset, count, previous, key, value, value_format, headers, timestamp in rows:
        if kind == DELIVERED:
            records.append((offset, key, value, value_format, headers, timestamp, count))
        elif kind == DEAD:
            dead.append((offset, count))
        elif kind == REFUSED:
            refused.append(offset)
        else:
            expired.append((offset, count, previous))
    return Polled(records=records, dead=dead, refused=refused, expired=expired)


def claim_dead(*, group_id, topic_id, partition, offset, delivery_limit):
    """Remove a range past the delivery limit (caller's transaction); return its records, or [] if
    another member claimed it first."""
    base = {"group_id": group_id, "topic_id": topic_id, "partition": partition}
    cur = cursor()
    row = run(cur, "claim_dead", {**base, "offset": offset, "delivery_limit": delivery_limit}).fetchone()
    if row is None:
        return []
    first, last, count = row
    records = run(cur, "records_between", {**base, "first": first, "last": last}).fetchall()
    return [(*r, count) for r in records]


def split(*, group_id, topic_id, partition, member_id, offsets):
    """Make the member's ranges covering offsets single-record rows (before a per-record fate)."""
    run(cursor(), "share_split", {"group_id": group_id, "topic_id": topic_id, "partition": partition,
                                  "member_id": member_id, "offsets": list(offsets)})


def _ack_params(group_id, member_id, items):
    return {
        "group_id": group_id,
        "member_id": member_id,
        "topic_ids": [i[0] for i in items],
        "partitions": [i[1] for i in items],
        "offsets": [i[2] for i in items],
        "counts": [i[3] for i in items],
    }


def finish_deliveries(*, group_id, member_id, items):
    """Remove held single-record rows [(topic_id, partition, offset, delivery_count)]; return the set
    done. Items missing from the result were re-acquired since: their acknowledgement is refused."""
    if not items:
        return set()
    rows = run(cursor(), "finish_deliveries", _ack_params(group_id, member_id, items)).fetchall()
    return {tuple(r) for r in rows}


def finish_ranges(*, group_id, member_id, items):
    """Remove the held ranges (of more than one record) wholly covered by items [(topic_id,
    partition, offset, delivery_count)]; return the (topic_id, partition, offset) of every record
    they covered."""
    if not items:
        return set()
    rows = run(cursor(), "finish_ranges", _ack_params(group_id, member_id, items)).fetchall()
    return {(topic_id, partition, offset) for topic_id, partition, first, last in rows
            for offset in range(first, last + 1)}


def release_deliveries(*, group_id, member_id, items, delays_ms):
    """Make held single-record rows available again after their delays; return the set released."""
    if not items:
        return set()
    params = {**_ack_params(group_id, member_id, items), "delays_ms": delays_ms}
    return {tuple(r) for r in run(cursor(), "release_deliveries", params).fetchall()}


def renew_deliveries(*, group_id, member_id, items, lock_ms):
    """Extend the locks of the held rows covering items; return the (topic_id, partition, offset)
    of every record still held."""
    if not items:
        return set()
    params = {**_ack_params(group_id, member_id, items), "lock_ms": lock_ms}
    rows = run(cursor(), "renew_deliveries", params).fetchall()
    return {(t, p, o) for t, p, first, last in rows for o in range(first, last + 1)}


def defer_deliveries(*, group_id, member_id, items, delays_ms):
    """Hand held single-record rows back after their delays without counting the delivery; return
    the set handed back (fenced like release_deliveries)."""
    if not items:
        return set()
    params = {**_ack_params(group_id, member_id, items), "delays_ms": delays_ms}
    return {tuple(r) for r in run(cursor(), "defer_deliveries", params).fetchall()}


def expedite_deliveries(*, group_id, items):
    """Make waiting handed-back records [(topic_id, partition, offset)] available now; return those changed."""
    if not items:
        return set()
    params = {"group_id": group_id, "topic_ids": [i[0] for i in items], "partitions": [i[1] for i in items],
              "offsets": [i[2] for i in items]}
    return {tuple(r) for r in run(cursor(), "expedite_deliveries", params).fetchall()}
