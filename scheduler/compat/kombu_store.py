"""The Sluice side of the kombu transport: a queue is a topic read by a share group of the same name,
bindings live in a table every process reads, and a message due later (Celery's eta) waits as a
delayed record. Imported once Django is set up (kombu_transport sees to it)."""
import datetime
import hashlib
import logging
import re
import uuid

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import DurationField, ExpressionWrapper, F
from django.utils import timezone
from kombu.utils import json as kombu_json

from queueing import exceptions as engine_exceptions, producer, share, topics, wakeups
from scheduler.compat import models, share_queue

logger = logging.getLogger("sluice.kombu")

TOPIC_PREFIX = "kombu."
_SAFE = re.compile(r"^[a-zA-Z0-9._-]+$")
_UNSAFE_CHARACTERS = re.compile(r"[^a-zA-Z0-9._-]")
ACCEPT, RELEASE, REJECT = share.ACCEPT, share.RELEASE, share.REJECT


def topic_for(queue):
    """The topic (and share group) of a kombu queue. Names a topic cannot carry (Celery's
    `celery@host.celery.pidbox`) are spelled safely with a digest of the real name, so two queues
    never share a topic."""
    name = TOPIC_PREFIX + queue
    if _SAFE.match(queue) and len(name) <= 249:
        return name
    digest = hashlib.sha1(queue.encode("utf-8")).hexdigest()[:12]
    return f"{TOPIC_PREFIX}{_UNSAFE_CHARACTERS.sub('_', queue)[:200]}-{digest}"


def ensure_topic(queue, *, partitions=None):
    """The TopicInfo of a queue's topic, created on first use."""
    name = topic_for(queue)
    try:
        return topics.cached_topic(name)
    except engine_exceptions.TopicNotFound:
        try:
            with transaction.atomic():
                # As for task queues: a message is needed until it is settled, so a retention keeps
                # a busy queue's log from growing for ever.
                return topics.create_topic(name, partitions=partitions or settings.SLUICE["TASK_PARTITIONS"],
                                           retention_ms=settings.SLUICE["TASK_TOPIC_RETENTION_MS"])
        except engine_exceptions.TopicExists:
            return topics.get_topic(name)


# Queues -------------------------------------------------------------------------------------


def declare_queue(queue, *, arguments=None, partitions=None):
    """Create the queue's topic and row if missing; a declaration counts as a use (AMQP's x-expires)."""
    arguments = arguments or {}
    info = ensure_topic(queue, partitions=partitions)
    fields = {"topic": info.name, "last_used": timezone.now(),
              "expires_ms": _milliseconds(arguments.get("x-expires")),
              "message_ttl_ms": _milliseconds(arguments.get("x-message-ttl"))}
    try:
        models.KombuQueue.objects.update_or_create(name=queue, defaults=fields)
    except IntegrityError:  # declared at the same moment by another process
        models.KombuQueue.objects.filter(name=queue).update(**fields)
    if fields["expires_ms"]:
        expire_queues()
    return info


def _milliseconds(value):
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 else None


def has_queue(queue):
    return models.KombuQueue.objects.filter(name=queue).exists() or _topic_exists(queue)


def _topic_exists(queue):
    return share_queue.exists(topic_for(queue))


def delete_queue(queue):
    """Delete a queue: its bindings, its row, its share group and its topic (with waiting messages)."""
    name = topic_for(queue)
    models.KombuBinding.objects.filter(queue=queue).delete()
    models.KombuQueue.objects.filter(name=queue).delete()
    share_queue.delete(name)


def touch_queues(queues):
    """Mark queues as used (they have a consumer), so that their x-expires does not run out."""
    if queues:
        models.KombuQueue.objects.filter(name__in=list(queues), expires_ms__isnull=False).update(
            last_used=timezone.now())


def expire_queues():
    """Delete the queues declared with x-expires that went unused for longer; return their names."""
    unused = ExpressionWrapper(F("expires_ms") * datetime.timedelta(milliseconds=1), output_field=DurationField())
    names = list(models.KombuQueue.objects.filter(expires_ms__isnull=False)
                 .alias(cutoff=F("last_used") + unused).filter(cutoff__lt=timezone.now())
                 .values_list("name", flat=True)[:100])
    for name in names:
        delete_queue(name)
        logger.info("kombu queue %s expired (unused for longer than its x-expires)", name, extra={"queue": name})
    return names


def size(queue):
    """Messages ready in the queue (as AMQP counts them: neither held by a consumer nor waiting for an eta)."""
    return share_queue.ready(topic_for(queue))


def purge(queue):
    """Remove the queue's ready messages and those waiting for their eta; return how many (messages
    held by consumers stay, as AMQP purges only ready ones)."""
    return share_queue.purge(topic_for(queue), client_id="kombu-purge")


# Bindings -------------------------------------------------------------------------------------


def bind(exchange, exchange_type, routing_key, pattern, queue):
    models.KombuBinding.objects.get_or_create(
        exchange=exchange, routing_key=routing_key or "", queue=queue,
        defaults={"exchange_type": exchange_type, "pattern": pattern or ""},
    )


def unbind(exchange, routing_key, queue):
    models.KombuBinding.objects.filter(exchange=exchange, routing_key=routing_key or "", queue=queue).delete()


def delete_exchange(exchange):
    models.KombuBinding.objects.filter(exchange=exchange).delete()


def table(exchange):
    """kombu's routing table of an exchange: [(routing_key, pattern, queue)]."""
    return [(key, pattern or None, queue) for key, pattern, queue in
            models.KombuBinding.objects.filter(exchange=exchange).values_list("routing_key", "pattern", "queue")]


def exchange_type(exchange):
    """The type an exchange was bound with (for a publisher that did not declare it), or None."""
    return models.KombuBinding.objects.filter(exchange=exchange).values_list("exchange_type", flat=True).first()


# Publishing -----------------------------------------------------------------------------------


def publish(queues, message):
    """Append a kombu message to each queue's topic, in one transaction (the caller's, if any).

    A message with a future eta (Celery's header) waits as a delayed record and enters the log when
    due, so no consumer holds it before then.
    """
    value = kombu_json.dumps(message).encode("utf-8")
    due = _due(message)
    if len(queues) == 1:  # one statement commits by itself
        _send(queues[0], value, due)
        return
    with transaction.atomic():
        for queue in queues:
            _send(queue, value, due)


def _send(queue, value, due):
    info = ensure_topic(queue)
    if due is None:
        producer.send(info.name, value)
    else:
        producer.send(info.name, value, deliver_at=due)


def _due(message):
    """The message's eta if it is in the future (naive times are taken as UTC), else None."""
    eta = (message.get("headers") or {}).get("eta")
    if not eta:
        return None
    try:
        when = datetime.datetime.fromisoformat(eta) if isinstance(eta, str) else eta
    except ValueError:
        return None
    if not isinstance(when, datetime.datetime):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return when if when > timezone.now() else None


# Reading --------------------------------------------------------------------------------------


class Reader:
    """One queue read by one kombu channel: a member of the queue's share group that never waits by
    itself (the transport waits for every queue at once, on one LISTEN connection)."""

    def __init__(self, queue, *, lock_ms=None, batch=100):
        self.queue = queue
        info = ensure_topic(queue)
        self.topic = info.name
        self.topic_id = info.id
        self.wakeup_keys = wakeups.partition_keys([(info.id, p) for p in range(info.partition_count)])
        row = models.KombuQueue.objects.filter(name=queue).values_list("message_ttl_ms", flat=True).first()
        self.message_ttl = datetime.timedelta(milliseconds=row) if row else None
        self.consumer = share.ShareConsumer(self.topic, [self.topic], auto_offset_reset="earliest", max_records=batch,
                                            client_id="kombu", lock_duration_ms=lock_ms, listen=False)

    @property
    def lock_ms(self):
        return self.consumer.lock_ms if self.consumer.group_row is not None else (
            self.consumer.lock_duration_ms or settings.SLUICE["LOCK_DURATION_MS"])

    def take(self, limit):
        """Acquire up to limit messages ready now; return [(record, payload)]. A message older than the
        queue's x-message-ttl is accepted unseen (AMQP drops it), and the next ones are looked at."""
        while True:
            records = self.consumer.poll(timeout=0, max_records=max(1, limit))
            cutoff = timezone.now() - self.message_ttl if self.message_ttl else None
            stale = [r for r in records if cutoff is not None and r.timestamp < cutoff]
            if stale:
                self.accept_now(stale)
            taken = [(r, self._payload(r)) for r in records if not (cutoff is not None and r.timestamp < cutoff)]
            if taken or not records:
                return taken

    @staticmethod
    def _payload(record):
        payload = kombu_json.loads(bytes(record.value))
        properties = payload.setdefault("properties", {})
        # A tag per delivery: the publisher's tag is shared by a fanout's copies and redeliveries.
        properties["delivery_tag"] = uuid.uuid4().hex
        properties.setdefault("delivery_info", {})["redelivered"] = record.delivery_count > 1
        if record.delivery_count > 1:
            payload["redelivered"] = True
        return payload

    def accept_now(self, records):
        """Accept records at once (no_ack consumers: a message is done when delivered)."""
        for record in records:
            self.consumer.accept(record)
        self.consumer.flush()

    def settle(self, record, fate):
        """Accept, release or reject (dead-letter) one held record now, from any thread; False if the
        lock was lost meanwhile (the message was or will be delivered again)."""
        return self.consumer.settle(record, fate)

    def renew(self, records):
        """Extend the locks of held records; return those lost (from any thread)."""
        return self.consumer.renew(records)

    def heartbeat(self):
        self.consumer.heartbeat()

    def close(self):
        self.consumer.close()
