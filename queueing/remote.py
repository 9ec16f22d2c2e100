"""Share-group members that live across requests, for clients over HTTP that cannot hold a connection.

A remote member is a member id and the locks it holds, nothing more: each acquire() joins the group
for the length of one poll, and each acknowledge() for the length of its acknowledgements, under the
same member id. Between requests the member is not listed, but its records stay locked to it until
acknowledged or until their lock lapses, as for any member; a lapsed record is delivered again and
its acknowledgement is then refused.
"""
from django.db import transaction

from queueing import exceptions, models, share, types

ACCEPT, RELEASE, REJECT = share.ACCEPT, share.RELEASE, share.REJECT
MAX_RECORDS = 500
MAX_LOCK_MS = 3_600_000
MAX_WAIT_S = 30.0


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
