"""Raw SQL of replays: bounded offset-range reads of one partition, outside any consumer group."""
from queueing.storage.log import cursor, run


def replay_bounds(*, topic_id, partitions, since=None):
    """Return [(partition, log_start_offset, log_end_offset, first offset at or after since or None)]
    for the partitions named, in partition order."""
    params = {"topic_id": topic_id, "partitions": list(partitions), "since": since}
    return run(cursor(), "replay_bounds", params).fetchall()


def _range_params(topic_id, partition, position, end, since, until, key, limit):
    return {
        "topic_id": topic_id,
        "partition": partition,
        "position": position,
        "end": end,
        "since": since,
        "until": until,
        "key": key,
        "limit": limit,
    }


def scan_replay_range(*, topic_id, partition, position, end, since=None, until=None, key=None, limit):
    """Return up to limit [(offset, key, headers, value size, value preview)] of one partition in
    [position, end) stamped in [since, until) with key (each filter only if given), in offset order."""
    params = _range_params(topic_id, partition, position, end, since, until, key, limit)
    return run(cursor(), "scan_replay_range", params).fetchall()


def read_replay_range(*, topic_id, partition, position, end, since=None, until=None, key=None, limit):
    """Return up to limit [(offset, key, value, value_format, headers)]; the selection of
    scan_replay_range."""
    params = _range_params(topic_id, partition, position, end, since, until, key, limit)
    return run(cursor(), "read_replay_range", params).fetchall()
