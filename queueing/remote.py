"""Consumers that live across requests, for clients over HTTP that cannot hold a connection: share-group
members, and readers of one partition that commit a consumer group's offsets themselves.

A remote member is a member id and the locks it holds, nothing more: each acquire() joins the group
for the length of one poll, and each acknowledge() for the length of its acknowledgements, under the
same member id. Between requests the member is not listed, but its records stay locked to it until
acknowledged or until their lock lapses, as for any member; a lapsed record is delivered again and
its acknowledgement is then refused.
"""
from django.db import transaction

from queueing import exceptions, groups, models, share, types
from queueing.storage import log

ACCEPT, RELEASE, REJECT = share.ACCEPT, share.RELEASE, share.REJECT
MAX_RECORDS = 500
MAX_LOCK_MS = 3_600_000
MAX_WAIT_S = 30.0
MAX_KEY_WINDOW = 100_000  # newest records per partition a search by key may look through


def acquire(group, topics, *, member_id, max_records=100, lock_ms=None, wait_s=0.0,
            auto_offset_reset=types.OffsetReset.LATEST):
    """Acquire up to max_records records of topics for member_id, locked for lock_ms (the group's
    lock duration if None), waiting up to wait_s for some to come. Raises TopicNotFound, InvalidArgument."""
    if not 1 <= max_records <= MAX_RECORDS:
        raise exceptions.InvalidArgument(reason=f"max_records must be 1 to {MAX_RECORDS}")
    if lock_ms is not None and not 1000 <= lock_ms <= MAX_LOCK_MS:
        raise exceptions.InvalidArgument(reason=f"lock_ms must be 1000 to {MAX_LOCK_MS}")
    if not 0 <= wait_s <= MAX_WAIT_S:
        raise exceptions.InvalidArgument(reason=f"the wait is 0 to {MAX_WAIT_S:g} seconds")
    missing = sorted(set(topics) - set(models.Topic.objects.filter(name__in=topics).values_list("name", flat=True)))
    if missing:
        raise exceptions.TopicNotFound(name=missing[0])  # before the group is created: a refusal stores nothing
    member = share.ShareConsumer(group, topics, max_records=max_records, lock_duration_ms=lock_ms,
                                 client_id="http", listen=wait_s > 0, auto_offset_reset=auto_offset_reset)
    member.member_id = member_id
    try:
        return member.poll(timeout=wait_s)
    finally:
        member.close()


def acknowledge(group, *, member_id, acks):
    """Settle records held by member_id: acks are (topic, partition, offset, delivery_count, fate,
    delay_s, reason) with fate ACCEPT, RELEASE (delivered again after delay_s) or REJECT (to the
    dead-letter topic). All in one transaction; return one bool per ack: False where the member no
    longer held the record (its lock lapsed), which changes nothing. Raises GroupNotFound,
    TopicNotFound, RecordNotFound."""
    if not models.ShareGroup.objects.filter(name=group).exists():
        raise exceptions.GroupNotFound(group=group)
    names = sorted({ack[0] for ack in acks})
    member = share.ShareConsumer(group, names, client_id="http", listen=False)
    member.member_id = member_id
    done = []
    try:
        with transaction.atomic():
            member.join()
            for topic, partition, offset, count, fate, delay_s, reason in acks:
                record = _record(topic, partition, offset)._replace(delivery_count=count)
                done.append(member.settle(record, fate, delay=delay_s, error=reason))
    finally:
        member.close()
    return done


def _record(topic, partition, offset):
    info = models.Topic.objects.filter(name=topic).values_list("id", flat=True).first()
    if info is None:
        raise exceptions.TopicNotFound(name=topic)
    row = models.Record.objects.filter(topic_id=info, partition=partition, offset=offset).first()
    if row is None:
        raise exceptions.RecordNotFound(topic=topic, partition=partition, offset=offset)
    value = None if row.value is None else bytes(row.value)
    key = None if row.key is None else bytes(row.key)
    return types.Record(topic, partition, offset, key, value, row.value_format, row.headers or {}, row.timestamp)


# Ordered reading, one partition at a time ------------------------------------------------------


def _partition(topic, partition):
    row = models.Partition.objects.select_related("topic").filter(topic__name=topic, number=partition).first()
    if row is None:
        if not models.Topic.objects.filter(name=topic).exists():
            raise exceptions.TopicNotFound(name=topic)
        raise exceptions.PartitionNotFound(topic=topic, partition=partition)
    return row


def read(topic, partition, *, offset=None, group=None, max_records=100):
    """Return (offset read from, log start, log end, records) of one partition, in offset order: from
    offset, or else from group's committed offset, or else from the log's start. A position below
    the log's start (removed by retention) reads from the start. Raises TopicNotFound,
    PartitionNotFound, InvalidArgument."""
    if not 1 <= max_records <= MAX_RECORDS:
        raise exceptions.InvalidArgument(reason=f"max_records must be 1 to {MAX_RECORDS}")
    part = _partition(topic, partition)
    if offset is None and group is not None:
        offset = models.CommittedOffset.objects.filter(
            group__name=group, topic_id=part.topic_id, partition=partition).values_list("offset", flat=True).first()
    start = max(part.log_start_offset, offset if offset is not None else part.log_start_offset)
    rows = log.fetch_records(positions={(part.topic_id, partition): start}, per_partition=max_records)
    records = [types.Record(topic, partition, r[2], None if r[3] is None else bytes(r[3]),
                            None if r[4] is None else bytes(r[4]), r[5], r[6] or {}, r[7]) for r in rows]
    return start, part.log_start_offset, part.next_offset, records


def offset_for_time(topic, partition, moment):
    """Return the first offset of one partition stamped at or after moment (Kafka's
    offsetsForTimes), never below the log start; the log end if every record is older. Raises
    TopicNotFound, PartitionNotFound."""
    part = _partition(topic, partition)
    found = log.offset_for_timestamp(topic_id=part.topic_id, partition=partition, timestamp=moment)
    return part.next_offset if found is None else max(found, part.log_start_offset)


def find_by_key(topic, key, *, partitions=None, window=10_000, max_records=50):
    """Return (windows, records): the records whose key is one of keys (bytes) among the newest
    window records of each partition (default every partition), newest first, at most max_records;
    windows are the (partition, first offset, log end) searched. Each search is a primary-key range
    of one partition, so its cost is bounded by window, never by the log's length. Raises
    TopicNotFound, PartitionNotFound, InvalidArgument."""
    if not 1 <= window <= MAX_KEY_WINDOW:
        raise exceptions.InvalidArgument(reason=f"the window is 1 to {MAX_KEY_WINDOW} records per partition")
    if not 1 <= max_records <= MAX_RECORDS:
        raise exceptions.InvalidArgument(reason=f"max_records must be 1 to {MAX_RECORDS}")
    keys = [key] if isinstance(key, bytes) else list(key)
    if partitions is None:
        info = models.Topic.objects.filter(name=topic).first()
        if info is None:
            raise exceptions.TopicNotFound(name=topic)
        partitions = range(info.partition_count)
    windows, found = [], []
    for number in partitions:
        part = _partition(topic, number)
        first = max(part.log_start_offset, part.next_offset - window)
        windows.append((number, first, part.next_offset))
        rows = key_window(part, first, keys)
        found += [types.Record(topic, number, r.offset, bytes(r.key), None if r.value is None else bytes(r.value),
                               r.value_format, r.headers or {}, r.timestamp) for r in rows[:max_records]]
    found.sort(key=lambda r: r.timestamp, reverse=True)
    return windows, found[:max_records]


def key_window(part, first, keys):
    """The records of one partition from offset first to its end whose key is one of keys, newest
    first: a backward range scan of each segment's primary key, the key checked on the rows read."""
    return models.Record.objects.filter(topic_id=part.topic_id, partition=part.number, offset__gte=first,
                                        offset__lt=part.next_offset, key__in=keys).order_by("-offset")


def commit(group, topic, partition, offset):
    """Store group's committed offset (the next offset to read) of one partition, for a reader that
    is not a member (Kafka's commit by a standalone consumer). Refused with GroupHasMembers while
    the group has live members, which own its offsets. Returns the offset stored. Raises
    TopicNotFound, PartitionNotFound, InvalidArgument (outside the log's bounds)."""
    part = _partition(topic, partition)
    if not part.log_start_offset <= offset <= part.next_offset:
        raise exceptions.InvalidArgument(
            reason=f"offset {offset} is outside {topic}-{partition}'s log ({part.log_start_offset} to {part.next_offset})")
    with transaction.atomic():
        locked = groups._locked_group(group, create=True)
        groups._expire_members(locked, groups.db_now())
        members = models.GroupMember.objects.filter(group=locked).count()
        if members:
            raise exceptions.GroupHasMembers(group=group, count=members)
        models.CommittedOffset.objects.update_or_create(
            group=locked, topic_id=part.topic_id, partition=partition,
            defaults={"offset": offset, "committed_at": groups.db_now()})
    return offset
