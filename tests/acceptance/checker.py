"""A queue checker in the manner of Jepsen's: reads histories of sends and reads, reports anomalies.

Sends: ("invoke", id), ("ok", id, partition, offset), ("fail", id) (outcome unknown), ("aborted", id)
(sent in a transaction that rolled back). Reads: (consumer, generation, partition, offset, id), in the
order each consumer read them. Redelivery of the same (partition, offset, id) is not a duplicate.
"""
import collections


def check(sends, reads, *, keys=None):
    """Return {anomaly: [examples]}; every list must be empty for a correct queue.

    keys, if given, maps id -> (producer, key) so per-key order can be checked for acknowledged sends.
    """
    invoked = {s[1] for s in sends if s[0] in ("invoke", "ok", "fail")}
    acknowledged = {s[1]: (s[2], s[3]) for s in sends if s[0] == "ok"}
    aborted = {s[1] for s in sends if s[0] == "aborted"}
    where = collections.defaultdict(set)  # id -> {(partition, offset)}
    at = collections.defaultdict(set)  # (partition, offset) -> {id}
    for _, _, partition, offset, ident in reads:
        where[ident].add((partition, offset))
        at[(partition, offset)].add(ident)
    anomalies = {
        "lost": sorted(i for i in acknowledged if i not in where),
        "duplicated": sorted(i for i, places in where.items() if len(places) > 1),
        "unexpected": sorted(i for i in where if i not in invoked and i not in aborted),
        "aborted_read": sorted(i for i in where if i in aborted),
        "inconsistent_offsets": sorted(slot for slot, ids in at.items() if len(ids) > 1),
        "wrong_place": sorted(i for i, slot in acknowledged.items() if i in where and where[i] != {slot}),
        "non_monotonic": [],
        "skipped": [],
        "holes": [],
        "key_order": [],
    }
    last = {}
    for consumer, generation, partition, offset, _ in reads:
        run = (consumer, generation, partition)
        previous = last.get(run)
        if previous is not None:
            if offset <= previous and offset != previous:
                anomalies["non_monotonic"].append((run, previous, offset))
            elif offset > previous + 1:
                anomalies["skipped"].append((run, previous, offset))
        last[run] = offset if previous is None else max(previous, offset)
    by_partition = collections.defaultdict(set)
    for partition, offset in at:
        by_partition[partition].add(offset)
    for partition, offsets in by_partition.items():
        missing = set(range(max(offsets) + 1)) - offsets
        if missing:
            anomalies["holes"].append((partition, sorted(missing)[:10]))
    if keys:
        order = collections.defaultdict(list)  # (producer, key) -> [(send order, partition, offset)]
        for index, send in enumerate(s for s in sends if s[0] == "ok"):
            producer, key = keys[send[1]]
            order[(producer, key)].append((index, send[2], send[3]))
        for stream, entries in order.items():
            placed = [(p, o) for _, p, o in sorted(entries)]
            if len({p for p, _ in placed}) > 1 or [o for _, o in placed] != sorted(o for _, o in placed):
                anomalies["key_order"].append(stream)
    return anomalies


def parse(lines):
    """Split agent log lines into (sends, reads)."""
    sends, reads = [], []
    for line in lines:
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "read":
            consumer, generation, partition, offset, ident = parts[1:6]
            reads.append((consumer, int(generation), int(partition), int(offset), ident))
        elif parts[0] == "ok":
            sends.append(("ok", parts[1], int(parts[2]), int(parts[3])))
        else:
            sends.append((parts[0], parts[1]))
    return sends, reads
