"""A django-q2 broker on Sluice: `Q_CLUSTER = {"broker_class": "scheduler.compat.djangoq_broker.Broker"}`
runs a django-q2 cluster on the engine.

A cluster's queue (its list_key) is the topic `djangoq.<name>` read by the share group of the same
name. The pusher acquires up to `bulk` records with a lock of `retry` seconds (django-q2's
"seconds to wait for acknowledgement before retrying a task"); the monitor, another process,
acknowledges what the pusher acquired, as the member that holds it; a task not acknowledged in
time is delivered again, and past the share group's delivery limit goes to its dead-letter topic.
The payload, django-q2's signed pickle, is stored unchanged. An enqueue inside
`transaction.atomic()` commits with it.

The monitor saves each result, then acknowledges it: acknowledgements are handed to a thread of the
process that accepts them together, within ACK_WINDOW_S, on a database connection of its own (the
monitor's is closed before every task by django-q2, CONN_MAX_AGE = 0 by default). An acknowledgement
still waiting when the process dies is not lost work: the task's lock lapses and it runs again.
"""
import logging
import multiprocessing.util
import os
import threading
import time

from django.db import connection, transaction
from django_q.brokers import Broker as DjangoQBroker
from django_q.conf import Conf

from queueing import exceptions as engine_exceptions, producer, share, topics, types
from scheduler.compat import share_queue

logger = logging.getLogger("sluice.djangoq")

TOPIC_PREFIX = "djangoq."
HANDLES = 64  # acknowledging handles kept per process (one per pusher member seen)
ACK_WINDOW_S = 0.02  # how long an acknowledgement may wait for others to be accepted with it
ACK_IDLE_S = 2.0  # the acknowledging thread ends (closing its connection) after this long with nothing to do


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
        self._acks = Acknowledgements(self)

    @staticmethod
    def get_connection(list_key=None):
        return None  # the Django database's connection, opened as Django opens it

    # Producing.

    def enqueue(self, task):
        """Append the signed package as it is; return where it went ("partition:offset")."""
        info = self._ensure_topic()
        sent = producer.send(info.name, task.encode("utf-8") if isinstance(task, str) else task)
        return f"{sent.partition}:{sent.offset}"

    def prepare(self):
        """Create the queue's topic and share group now, in a transaction of their own (the first
        enqueue does it otherwise, inside the caller's transaction, where the topic is read again by
        every enqueue until that transaction commits)."""
        self._ensure_topic()

    def _ensure_topic(self):
        from django.conf import settings
        from django.db import transaction

        try:
            return topics.cached_topic(self.topic)
        except engine_exceptions.TopicNotFound:
            try:
                with transaction.atomic():
                    info = topics.create_topic(self.topic, partitions=1,  # first in, first out, as its ORM broker
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
        """The task is done: accept its record, as the member that acquired it (from any process),
        within ACK_WINDOW_S, together with the others acknowledged meanwhile (flush() waits for it)."""
        self._batch.pop(task_id, None)
        self._acks.add(task_id)

    def flush(self):
        """Accept now the acknowledgements still waiting; return once they are written."""
        self._acks.flush()

    def close(self):
        """Accept what waits and end this process's acknowledging thread (and its connection)."""
        self._acks.stop()
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

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
        parsed = self._parse(ack_id)
        if parsed is None:
            return
        member_id, record = parsed
        self._batch.pop(ack_id, None)
        if not self._handle(member_id, self._handles).settle(record, fate):
            self._refused(1)

    def _parse(self, ack_id):
        """(member id, record) an acknowledgement id names, or None (warned) if it names none."""
        try:
            member_id, partition, offset, count = ack_id.rsplit("/", 3)
            return member_id, share_record(self.topic, int(partition), int(offset), int(count))
        except (AttributeError, ValueError):
            logger.warning("django-q2 queue %s: %r is not an acknowledgement id of this broker", self.topic, ack_id)
            return None

    def _refused(self, count):
        logger.warning("django-q2 queue %s: %d acknowledgement(s) refused, the lock (retry, %ss) had lapsed; the "
                       "task is delivered again", self.topic, count, Conf.RETRY, extra={"queue": self.topic})

    def _handle(self, member_id, handles):
        """The member itself, if this process's; else an acknowledging handle from handles (a cache
        per thread: a handle is used by the thread that made it)."""
        if self._consumer is not None and self._consumer.member_id == member_id and handles is self._handles:
            return self._consumer
        handle = handles.get(member_id)
        if handle is None:
            if len(handles) >= HANDLES:
                handles.pop(next(iter(handles)))
            handle = handles[member_id] = share.acknowledger(self.topic, [self.topic], member_id)
        return handle

    def accept_many(self, ack_ids, handles):
        """Accept the records of ack_ids in one transaction (one statement per member); the
        acknowledging thread's work. Refusals (lapsed locks) are logged."""
        by_member = {}
        for ack_id in ack_ids:
            parsed = self._parse(ack_id)
            if parsed is not None:
                by_member.setdefault(parsed[0], []).append(parsed[1])
        if not by_member:
            return
        with transaction.atomic():
            refused = sum(len(self._handle(member_id, handles).accept_now(records))
                          for member_id, records in by_member.items())
        if refused:
            self._refused(refused)

    # The queue.

    def queue_size(self):
        return share_queue.ready(self.topic)

    def lock_size(self):
        self.flush()  # what this process acknowledged is not held
        return share_queue.held(self.topic)

    def purge_queue(self):
        return share_queue.purge(self.topic, client_id="django-q2-purge")

    def delete_queue(self):
        self.flush()
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


class Acknowledgements:
    """The acknowledgements of one broker in one process, accepted together by a thread of their own
    within ACK_WINDOW_S (django-q2's monitor acknowledges task by task, one transaction each
    otherwise). The thread starts with the first acknowledgement and ends, closing its database
    connection, after ACK_IDLE_S with nothing to do; what waits at the process's exit is accepted
    first (multiprocessing runs the finalizer in django-q2's monitor process, atexit elsewhere)."""

    def __init__(self, broker):
        self.broker = broker
        self.pending = []
        self.sending = 0  # acknowledgements taken by the thread and not written yet
        self.changed = threading.Condition()
        self.thread = None
        self.pid = None
        self.finalizer = None
        self.stopping = False

    def add(self, ack_id):
        with self.changed:
            self.pending.append(ack_id)
            if self.thread is None or self.pid != os.getpid():  # none yet, it ended, or a forked child
                self._start()
            if len(self.pending) >= max(1, Conf.BULK) * 8:
                self.changed.notify_all()

    def _start(self):
        self.pid = os.getpid()
        self.thread = threading.Thread(target=self._run, name=f"djangoq-acks-{self.broker.list_key}", daemon=True)
        self.thread.start()
        if self.finalizer is None or not self.finalizer.still_active():
            self.finalizer = multiprocessing.util.Finalize(self, self.flush, exitpriority=10)

    def stop(self, timeout=30.0):
        """Write what waits, then end the thread (closing its connection) now, not when idle."""
        self.flush(timeout)
        with self.changed:
            thread, self.stopping = self.thread, True
            self.changed.notify_all()
        if thread is not None:
            thread.join(timeout)
        with self.changed:
            self.stopping = False

    def flush(self, timeout=30.0):
        """Wake the thread and wait (at most timeout seconds) until what waits now is written."""
        deadline = time.monotonic() + timeout
        with self.changed:
            self.changed.notify_all()
            while (self.pending or self.sending) and self.thread is not None and self.thread.is_alive():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.changed.wait(min(left, ACK_WINDOW_S))

    def _run(self):
        from django.db import connection as thread_connection  # this thread's own

        handles = {}  # the thread's acknowledging handles
        try:
            while True:
                with self.changed:
                    idle_since = time.monotonic()
                    while not self.pending:
                        if self.stopping or time.monotonic() - idle_since >= ACK_IDLE_S:
                            self.thread = None  # under the lock: the next add() starts another
                            return
                        self.changed.wait(ACK_WINDOW_S)
                    # Let a window's acknowledgements gather (a flush or a full batch cuts it short).
                    self.changed.wait(ACK_WINDOW_S)
                    batch, self.pending = self.pending, []
                    self.sending = len(batch)
                try:
                    self.broker.accept_many(batch, handles)
                except Exception:  # noqa: BLE001 - the locks lapse and the tasks run again: say so, go on
                    logger.exception("django-q2 queue %s: %d acknowledgement(s) not written; those tasks run again "
                                     "once their locks lapse", self.broker.topic, len(batch))
                    thread_connection.close()
                    handles.clear()
                finally:
                    with self.changed:
                        self.sending = 0
                        self.changed.notify_all()
        finally:
            thread_connection.close()
