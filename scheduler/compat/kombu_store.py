"""The Sluice side of the kombu transport: a queue is a topic read by a share group of the same name,
bindings live in a table every process reads, and a message due later (Celery's eta) waits as a
delayed record. Imported once Django is set up (kombu_transport sees to it)."""
import datetime
import hashlib
import itertools
import json
import logging
import os
import re
import time
import uuid

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import DurationField, ExpressionWrapper, F
from django.utils import timezone
from kombu.utils import json as kombu_json

from queueing import exceptions as engine_exceptions, models as engine_models, producer, share, topics, wakeups
from queueing.storage import share as share_storage
from scheduler.compat import models, share_queue

logger = logging.getLogger("sluice.kombu")

TOPIC_PREFIX = "kombu."
# A message with a priority above 0 goes to a topic of its own, its queue's band: "kombu-p9.celery".
# No queue's topic starts with "kombu-p" and a band's number ends at the first dot, so a band's name
# is never another queue's topic or another band's. The group `kombu.<queue>` reads every band.
BAND_PREFIX = "kombu-p"
# kombu's virtual transports' range (virtual.Channel.min_priority and max_priority): a higher number
# is served first, as on RabbitMQ; a priority above 9 counts as 9, anything else as 0.
MIN_PRIORITY, MAX_PRIORITY = 0, 9
_SAFE = re.compile(r"^[a-zA-Z0-9._-]+$")
_UNSAFE_CHARACTERS = re.compile(r"[^a-zA-Z0-9._-]")
ACCEPT, RELEASE, REJECT = share.ACCEPT, share.RELEASE, share.REJECT
BAND_REFRESH_S = 1.0  # how often a consumer looks for a queue's new bands
_band_made = 0.0  # when this process last made a band: its own readers look again at once


def topic_for(queue, priority=0):
    """The topic of a kombu queue's priority band (priority 0: the queue's topic, and the name of its
    share group). Names a topic cannot carry (Celery's `celery@host.celery.pidbox`) are spelled
    safely with a digest of the real name, so two queues never share a topic."""
    prefix = TOPIC_PREFIX if priority == 0 else f"{BAND_PREFIX}{priority}."
    name = prefix + queue
    if _SAFE.match(queue) and len(name) <= 249:
        return name
    digest = hashlib.sha1(queue.encode("utf-8")).hexdigest()[:12]
    return f"{prefix}{_UNSAFE_CHARACTERS.sub('_', queue)[:200]}-{digest}"


def priority_of(message):
    """A kombu message's priority (its `priority` property), as kombu's virtual transports read it:
    clamped to 0..9, 0 when missing or not a number."""
    try:
        priority = int((message.get("properties") or {}).get("priority") or 0)
    except (TypeError, ValueError):
        return MIN_PRIORITY
    return max(MIN_PRIORITY, min(priority, MAX_PRIORITY))


def bands(queue):
    """The topics of a queue's bands in use, highest priority first (the queue's own topic, band 0,
    always last). One indexed read."""
    names = [topic_for(queue, priority) for priority in range(MAX_PRIORITY, MIN_PRIORITY, -1)]
    found = set(engine_models.Topic.objects.filter(name__in=names).values_list("name", flat=True))
    return [name for name in names if name in found] + [topic_for(queue)]


def ensure_topic(queue, *, partitions=None, priority=0):
    """The TopicInfo of a queue's topic (of its band, for a priority above 0), created on first use.
    The queue's share group is made with its topic, and a band (as many partitions as the queue's
    topic) is read by that group from its first record once made: `groups describe` counts a queue's
    backlog before a consumer comes, as RabbitMQ shows a declared queue's messages."""
    name = topic_for(queue, priority)
    try:
        return topics.cached_topic(name)
    except engine_exceptions.TopicNotFound:
        if priority:
            partitions = ensure_topic(queue, partitions=partitions).partition_count
        try:
            with transaction.atomic():
                # As for task queues: a message is needed until it is settled, so a retention keeps
                # a busy queue's log from growing for ever.
                info = topics.create_topic(name, partitions=partitions or 1,
                                           retention_ms=settings.SLUICE["TASK_TOPIC_RETENTION_MS"])
                if not priority:
                    share.prepare_group(name, [name])
        except engine_exceptions.TopicExists:
            return topics.get_topic(name)
        if priority:
            global _band_made
            _band_made = time.monotonic()
            group = engine_models.ShareGroup.objects.filter(name=topic_for(queue)).values_list("id", flat=True).first()
            if group is not None:
                share_storage.ensure_share_partitions(group_id=group, topic_id=info.id, earliest=True)
        return info


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
    names = bands(queue)
    models.KombuBinding.objects.filter(queue=queue).delete()
    models.KombuQueue.objects.filter(name=queue).delete()
    share_queue.delete(topic_for(queue), names)


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
    """Messages ready in the queue, in every band (as AMQP counts them: neither held by a consumer nor
    waiting for an eta)."""
    return sum(share_queue.ready(topic_for(queue), band) for band in bands(queue))


def purge(queue):
    """Remove the queue's ready messages and those waiting for their eta; return how many (messages
    held by consumers stay, as AMQP purges only ready ones)."""
    return share_queue.purge(topic_for(queue), client_id="kombu-purge", names=bands(queue))


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
    due, so no consumer holds it before then. A message with a priority goes to its queue's band.
    """
    value = kombu_json.dumps(message).encode("utf-8")
    due = _due(message)
    priority = priority_of(message)
    if len(queues) == 1:  # one statement commits by itself
        _send(queues[0], value, due, priority)
        return
    with transaction.atomic():
        for queue in queues:
            _send(queue, value, due, priority)


def _send(queue, value, due, priority):
    info = ensure_topic(queue, priority=priority)
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


# Delivery tags: unique in this process (a counter) and, for the logs, across processes (a prefix,
# new in a forked child).
_TAG_PREFIX, _tags = "", None


def _new_tags():
    global _TAG_PREFIX, _tags
    _TAG_PREFIX, _tags = f"{uuid.uuid4().hex[:12]}.", itertools.count(1)


_new_tags()
os.register_at_fork(after_in_child=_new_tags)


def _loads(value):
    """A stored message (kombu's JSON). kombu's loads calls its hook for every object; only a value
    kombu's encoder marked (a datetime, bytes, a Decimal in the headers) needs it."""
    if b'"__type__"' in value:
        return kombu_json.loads(value)
    return json.loads(value)


class Reader:
    """One queue read by one kombu channel: a member of the queue's share group over every band of the
    queue, highest priority first, that never waits by itself (the transport waits for every queue at
    once, on one LISTEN connection)."""

    def __init__(self, queue, *, lock_ms=None, batch=100, durable_polls=True):
        self.queue = queue
        info = ensure_topic(queue)
        self.topic = info.name  # band 0's, which names the share group
        row = models.KombuQueue.objects.filter(name=queue).values_list("message_ttl_ms", flat=True).first()
        self.message_ttl = datetime.timedelta(milliseconds=row) if row else None
        self.consumer = share.ShareConsumer(self.topic, [self.topic], auto_offset_reset="earliest", max_records=batch,
                                            client_id="kombu", lock_duration_ms=lock_ms, listen=False, ordered=True,
                                            durable_polls=durable_polls)
        self.topic_ids = frozenset()
        self.wakeup_keys = frozenset()
        self._bands_read = None
        self._names = None
        self.refresh_bands()

    def refresh_bands(self, force=False):
        """Follow the queue's bands: re-read them (one indexed read) if forced, if BAND_REFRESH_S has
        passed since the last time or if this process made a band since, and subscribe to a new one;
        return whether the bands changed (the transport then listens for the new band's commits too).
        A band made by another process after the consumer started is polled within BAND_REFRESH_S
        of its first message."""
        now = time.monotonic()
        if (not force and self._bands_read is not None and now - self._bands_read < BAND_REFRESH_S
                and _band_made < self._bands_read):
            return False
        self._bands_read = now
        names = bands(self.queue)
        if names == self._names:
            return False
        self.consumer.subscribe(names)
        self._names = names
        infos = [topics.cached_topic(name) for name in names]
        self.topic_ids = frozenset(info.id for info in infos)
        self.wakeup_keys = wakeups.partition_keys([(info.id, p) for info in infos for p in range(info.partition_count)])
        return True

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
        payload = _loads(bytes(record.value))
        properties = payload.setdefault("properties", {})
        # A tag per delivery: the publisher's tag is shared by a fanout's copies and redeliveries.
        properties["delivery_tag"] = f"{_TAG_PREFIX}{next(_tags)}"
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
