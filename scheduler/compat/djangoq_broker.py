"""A django-q2 broker on Sluice: `Q_CLUSTER = {"broker_class": "scheduler.compat.djangoq_broker.Broker"}`
runs a django-q2 cluster on the engine.

A cluster's queue (its list_key) is the topic `djangoq.<name>` read by the share group of the same
name. The pusher acquires up to `bulk` records with a lock of `retry` seconds (django-q2's
"seconds to wait for acknowledgement before retrying a task"); the monitor, another process,
acknowledges what the pusher acquired, as the member that holds it; a task not acknowledged in
time is delivered again, and past the share group's delivery limit goes to its dead-letter topic.
The payload, django-q2's signed pickle, is stored unchanged. An enqueue inside
`transaction.atomic()` commits with it.
"""
import logging

from django.db import connection
from django_q.brokers import Broker as DjangoQBroker
from django_q.conf import Conf

from queueing import exceptions as engine_exceptions, producer, share, topics, types
from scheduler.compat import share_queue

logger = logging.getLogger("sluice.djangoq")

TOPIC_PREFIX = "djangoq."
HANDLES = 64  # acknowledging handles kept per process (one per pusher member seen)


def topic_for(list_key):
    return TOPIC_PREFIX + list_key


class Broker(DjangoQBroker):
    """django-q2's broker contract on a share group. Pickled into the cluster's processes with its
    list_key only; each process opens what it uses."""

    def __init__(self, list_key=None):
        super().__init__(list_key=list_key)
        self._reset()

    def __setstate__(self, state):
        super().__setstate__(state)
        self._reset()

    def _reset(self):
        self.topic = topic_for(self.list_key)
        self._consumer = None  # this process's share member, once it dequeues
        self._handles = {}  # member id -> share.acknowledger, to acknowledge what another process acquired
        self._batch = {}  # ack id -> record, of the last dequeue (fail() is called on them)

    @staticmethod
    def get_connection(list_key=None):
        return None  # the Django database's connection, opened as Django opens it

    # Producing.

    def enqueue(self, task):
        """Append the signed package as it is; return where it went ("partition:offset")."""
        info = self._ensure_topic()
        sent = producer.send(info.name, task.encode("utf-8") if isinstance(task, str) else task)
        return f"{sent.partition}:{sent.offset}"

    def _ensure_topic(self):
        from django.conf import settings
        from django.db import transaction

        try:
            return topics.cached_topic(self.topic)
        except engine_exceptions.TopicNotFound:
            try:
                with transaction.atomic():
                    info = topics.create_topic(self.topic, partitions=settings.SLUICE["TASK_PARTITIONS"],
                                               retention_ms=settings.SLUICE["TASK_TOPIC_RETENTION_MS"])
                    # The group from the start, so its backlog shows before a cluster first reads.
                    share.prepare_group(self.topic, [self.topic], lock_duration_ms=int(Conf.RETRY * 1000))
                    return info
            except engine_exceptions.TopicExists:
                return topics.get_topic(self.topic)

    # Consuming.

    def dequeue(self):
        """Acquire up to `bulk` tasks, each locked for `retry` seconds, waiting up to `poll` seconds
        for one (a commit wakes the wait); return [(ack id, package)], or None."""
        records = self._member().poll(timeout=Conf.POLL)
        self._batch = {self._ack_id(record): record for record in records}
        if not records:
            return None
        return [(ack_id, record.value.decode("utf-8")) for ack_id, record in self._batch.items()]

    def _member(self):
        if self._consumer is None:
            self._ensure_topic()
            self._consumer = share.ShareConsumer(
                self.topic, [self.topic], auto_offset_reset="earliest", max_records=max(1, Conf.BULK),
                client_id=f"django-q2 {Conf.CLUSTER_NAME}", lock_duration_ms=int(Conf.RETRY * 1000))
        return self._consumer

    def _ack_id(self, record):
        return f"{self._consumer.member_id}/{record.partition}/{record.offset}/{record.delivery_count}"

    def acknowledge(self, task_id):
        """The task is done: accept its record, as the member that acquired it (from any process)."""
        self._settle(task_id, share.ACCEPT)

    def fail(self, task_id):
        """The package could not be read: dead-letter it (django-q2's ORM broker deletes it)."""
        record = self._batch.pop(task_id, None)
        if record is not None and self._consumer is not None:
            self._consumer.settle(record, share.REJECT, error="django-q2 could not unpack the task")
        else:
            self._settle(task_id, share.ACCEPT)

    def delete(self, task_id):
        self._settle(task_id, share.ACCEPT)

    def _settle(self, ack_id, fate):
        try:
            member_id, partition, offset, count = ack_id.rsplit("/", 3)
            record = share_record(self.topic, int(partition), int(offset), int(count))
        except (AttributeError, ValueError):
            logger.warning("django-q2 queue %s: %r is not an acknowledgement id of this broker", self.topic, ack_id)
            return
        self._batch.pop(ack_id, None)
        if not self._handle(member_id).settle(record, fate):
            logger.warning("django-q2 queue %s: acknowledgement refused, the lock (retry, %ss) had lapsed; the "
                           "task is delivered again", self.topic, Conf.RETRY,
                           extra={"queue": self.topic, "offset": record.offset})

    def _handle(self, member_id):
        if self._consumer is not None and self._consumer.member_id == member_id:
            return self._consumer
        handle = self._handles.get(member_id)
        if handle is None:
            if len(self._handles) >= HANDLES:
                self._handles.pop(next(iter(self._handles)))
            handle = self._handles[member_id] = share.acknowledger(self.topic, [self.topic], member_id)
        return handle

    # The queue.

    def queue_size(self):
        return share_queue.ready(self.topic)

    def lock_size(self):
        return share_queue.held(self.topic)

    def purge_queue(self):
        return share_queue.purge(self.topic, client_id="django-q2-purge")

    def delete_queue(self):
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
        share_queue.delete(self.topic)

    def ping(self):
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True

    def info(self):
        if not self._info:
            self._info = f"Sluice share group {self.topic}"
        return self._info


def share_record(topic, partition, offset, delivery_count):
    """A record as an acknowledgement names it (its content is not needed to accept it)."""
    return types.Record(topic, partition, offset, None, None, 0, {}, None, delivery_count)
