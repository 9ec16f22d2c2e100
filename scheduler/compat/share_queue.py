"""A queue made of a topic read by a share group of the same name, as the kombu transport and the
django-q2 broker make theirs (the kombu transport's priority bands are more topics read by the same
group): how many records are ready, how many are held, purging and deleting."""
from django.db.models import F, Sum

from queueing import exceptions as engine_exceptions, models as engine_models, share, topics


def ready(name, topic=None):
    """Records ready in the queue (in topic, one of its group's topics; default the queue's own):
    neither held by a consumer nor waiting for a delay."""
    group = engine_models.ShareGroup.objects.filter(name=name).first()
    try:
        info = topics.cached_topic(topic or name)
    except engine_exceptions.TopicNotFound:
        return 0
    ends = dict(engine_models.Partition.objects.filter(topic_id=info.id).values_list("number", "next_offset"))
    if group is None:
        starts = dict(engine_models.Partition.objects.filter(topic_id=info.id)
                      .values_list("number", "log_start_offset"))
        return sum(end - starts.get(number, end) for number, end in ends.items())
    windows = dict(engine_models.SharePartition.objects.filter(group=group, topic_id=info.id)
                   .values_list("partition", "acquire_offset"))
    never_handed_out = sum(end - windows.get(number, end) for number, end in ends.items())
    released = engine_models.ShareDelivery.objects.filter(
        group_id=group.id, topic_id=info.id, state=engine_models.ShareDelivery.State.AVAILABLE,
    ).aggregate(n=Sum(F("last_offset") - F("offset") + 1))["n"] or 0
    return never_handed_out + released


def held(name):
    """Records of the queue held by consumers (acquired, not yet acknowledged)."""
    group = engine_models.ShareGroup.objects.filter(name=name).first()
    if group is None or not exists(name):
        return 0
    return engine_models.ShareDelivery.objects.filter(
        group_id=group.id, topic_id=topics.cached_topic(name).id, state=engine_models.ShareDelivery.State.ACQUIRED,
    ).aggregate(n=Sum(F("last_offset") - F("offset") + 1))["n"] or 0


def exists(name):
    try:
        topics.cached_topic(name)
    except engine_exceptions.TopicNotFound:
        return False
    return True


def purge(name, *, client_id, names=None):
    """Remove the queue's ready records and those waiting for a delay, in the topics names (default
    the queue's own); return how many. Records held by consumers stay. The ready ones are acquired
    and accepted through the share group, so a consumer never gets one half-removed."""
    names = [n for n in (names or [name]) if exists(n)]
    if not names:
        return 0
    removed = engine_models.DelayedRecord.objects.filter(topic__name__in=names).delete()[0]
    consumer = share.ShareConsumer(name, names, auto_offset_reset="earliest", max_records=1000,
                                   client_id=client_id, listen=False)
    try:
        while records := consumer.poll(timeout=0):
            for record in records:
                consumer.accept(record)
            consumer.flush()
            removed += len(records)
    finally:
        consumer.close()
    return removed


def delete(name, names=None):
    """Delete the queue's share group and its topics names (default the queue's own), with what waits in them."""
    share.delete_group(name)
    for topic in names or [name]:
        try:
            topics.delete_topic(topic)
        except engine_exceptions.TopicNotFound:
            pass
