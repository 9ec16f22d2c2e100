"""Raw SQL of share groups: acquisition under the share partition's lock, fenced acknowledgements."""
import dataclasses

from django.db import transaction

from queueing.storage.log import cursor, run


@dataclasses.dataclass(frozen=True, kw_only=True)
class Acquired:
    """What one acquisition on a partition produced."""

    records: list  # (offset, key, value, value_format, headers, timestamp, delivery_count)
    expired: list  # (offset, delivery_count, member_id) whose lock ran out: counted as deliveries
    dead: list  # (offset, key, value, value_format, headers, timestamp, delivery_count) past the limit


def ensure_share_partitions(*, group_id, topic_id, earliest):
    run(cursor(), "ensure_share_partitions", {"group_id": group_id, "topic_id": topic_id, "earliest": earliest})


def acquire(*, group_id, topic_id, partition, member_id, limit, lock_ms, delivery_limit, on_dead):
    """Acquire up to limit records of one partition for a member, in one short transaction.

    Returns None when another member is acquiring on this partition right now. Records whose
    expired delivery was their last are passed to on_dead(rows) inside the same transaction (to be
    dead-lettered there) and removed from the window.
    """
    base = {"group_id": group_id, "topic_id": topic_id, "partition": partition}
    with transaction.atomic():
        cur = cursor()
        locked = run(cur, "lock_share_partition", base).fetchone()
        if locked is None:
            return None
        share_partition_id, _, acquire_offset, log_start, log_end = locked
        if acquire_offset < log_start:
            run(cur, "skip_to_log_start", {"share_partition_id": share_partition_id, "log_start": log_start})
            run(cur, "drop_below_log_start", {**base, "log_start": log_start})
            acquire_offset = log_start
        again = run(cur, "redeliverable", {**base, "limit": limit}).fetchall()
        expired = [(offset, count, member) for offset, state, count, member in again if state == 1]
        dead_offsets = [offset for offset, _, count, _ in again if count >= delivery_limit]
        counts = {offset: count for offset, _, count, _ in again if offset not in dead_offsets}
        if counts:
            run(cur, "reacquire", {**base, "member_id": member_id, "lock_ms": lock_ms, "offsets": list(counts)})
        counts = {offset: count + 1 for offset, count in counts.items()}
        room = limit - len(counts)
        last = min(log_end, acquire_offset + room) - 1
        if room > 0 and last >= acquire_offset:
            run(cur, "acquire_new", {
                **base, "member_id": member_id, "lock_ms": lock_ms, "first": acquire_offset, "last": last,
                "share_partition_id": share_partition_id,
            })
            counts.update({offset: 1 for offset in range(acquire_offset, last + 1)})
        wanted = sorted(counts) + dead_offsets
        rows = run(cur, "records_at", {**base, "offsets": wanted}).fetchall() if wanted else []
        dead_counts = {offset: count for offset, _, count, _ in again if offset in dead_offsets}
        records = [(*row, counts[row[0]]) for row in rows if row[0] in counts]
        dead = [(*row, dead_counts[row[0]]) for row in rows if row[0] in dead_counts]
        if dead_offsets:
            run(cur, "drop_deliveries", {**base, "offsets": dead_offsets})
            on_dead(dead)
        run(cur, "advance_share_start", {"share_partition_id": share_partition_id})
        return Acquired(records=records, expired=expired, dead=dead)


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
    """Remove held deliveries [(topic_id, partition, offset, delivery_count)]; return the set done.

    Items missing from the result were re-acquired since (by anyone): their acknowledgement is refused.
    """
    if not items:
        return set()
    rows = run(cursor(), "finish_deliveries", _ack_params(group_id, member_id, items)).fetchall()
    return {tuple(r) for r in rows}


def release_deliveries(*, group_id, member_id, items, delays_ms):
    """Make held deliveries available again after their delays; return the set released."""
    if not items:
        return set()
    params = {**_ack_params(group_id, member_id, items), "delays_ms": delays_ms}
    return {tuple(r) for r in run(cursor(), "release_deliveries", params).fetchall()}


def renew_deliveries(*, group_id, member_id, items, lock_ms):
    """Extend the locks of held deliveries; return the set renewed."""
    if not items:
        return set()
    params = {**_ack_params(group_id, member_id, items), "lock_ms": lock_ms}
    return {tuple(r) for r in run(cursor(), "renew_deliveries", params).fetchall()}
