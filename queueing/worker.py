"""The ordered-group worker loop: poll, run handlers in offset order, commit, survive restarts."""
import contextlib
import logging
import signal
import threading
import traceback

from django.db import InterfaceError, OperationalError, connection

from queueing import consumer as consumer_module
from queueing import exceptions, types

logger = logging.getLogger("sluice.worker")


@contextlib.contextmanager
def on_stop(callback):
    """Call callback on SIGTERM and SIGINT while inside; restore the old handlers after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    for sig in previous:
        signal.signal(sig, lambda signum, frame: callback())
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class Worker:
    """Runs a group's handlers: one record at a time per partition, offsets committed per batch.

    A failed handler is retried in place with exponential back-off, so the partition keeps its
    order. A lost database connection is re-opened; uncommitted records are read again, so
    handlers must tolerate a redelivery (at-least-once).
    """

    def __init__(self, group, subscriptions, *, max_poll_records=100, poll_timeout=1.0,
                 retry_backoff=(0.1, 30.0), consumer_options=None):
        self.group = group
        self.subscriptions = subscriptions
        self.max_poll_records = max_poll_records
        self.poll_timeout = poll_timeout
        self.retry_backoff = retry_backoff
        self.consumer_options = consumer_options or {}
        self.stop_event = threading.Event()
        self.consumer = None
        self.processed = 0

    def _new_consumer(self):
        resets = {s.auto_offset_reset for s in self.subscriptions.values()}
        options = {"auto_offset_reset": resets.pop() if len(resets) == 1 else types.OffsetReset.EARLIEST}
        options.update(self.consumer_options)
        return consumer_module.Consumer(
            self.group,
            sorted(self.subscriptions),
            enable_auto_commit=False,
            max_poll_records=self.max_poll_records,
            client_id="worker",
            **options,
        )

    def run_once(self):
        """Poll once and handle what came; return True if more work is likely."""
        if self.consumer is None:
            self.consumer = self._new_consumer()
        records = self.consumer.poll(timeout=self.poll_timeout)
        done = {}
        for record in records:
            if self.stop_event.is_set():
                break
            if not self._handle(record):
                break
            done[types.TopicPartition(topic=record.topic, partition=record.partition)] = record.offset + 1
            self.processed += 1
        if done:
            try:
                self.consumer.commit(done)
            except exceptions.CommitFailed as error:
                logger.info("commit refused, re-syncing: %s", error)
        # Records polled but not handled (stop requested, or a retry pending) are read again.
        for tp, offset in self._unhandled(records, done).items():
            self.consumer.seek(tp, offset)
        return bool(records)

    def _unhandled(self, records, done):
        first = {}
        for record in records:
            tp = types.TopicPartition(topic=record.topic, partition=record.partition)
            if record.offset >= done.get(tp, 0) and tp not in first:
                first[tp] = record.offset
        return first

    def _handle(self, record):
        """Run the handler until it succeeds; return False if stopped before it did."""
        delay, ceiling = self.retry_backoff
        attempt = 0
        while not self.stop_event.is_set():
            attempt += 1
            try:
                self.subscriptions[record.topic].function(record)
                return True
            except (OperationalError, InterfaceError):
                raise
            except Exception as error:  # noqa: BLE001 - one bad record must not crash the worker
                logger.warning(
                    "handler failed on %s-%s@%s (attempt %d): %s",
                    record.topic, record.partition, record.offset, attempt, error,
                    extra={"traceback": traceback.format_exc(), "attempt": attempt},
                )
                if self.stop_event.wait(min(delay * 2 ** (attempt - 1), ceiling)):
                    return False
        return False

    def run(self):
        """Loop until stop(); on SIGTERM finish the current record, commit, and leave the group."""
        logger.info("worker for group %s on %s starting", self.group, ", ".join(sorted(self.subscriptions)))
        with on_stop(self.stop):
            try:
                while not self.stop_event.is_set():
                    try:
                        self.run_once()
                    except (OperationalError, InterfaceError, consumer_module.psycopg.OperationalError) as error:
                        logger.warning("database connection lost (%s); reconnecting", error)
                        self._reset_connection()
                        self.stop_event.wait(1.0)
            finally:
                self._shutdown()

    def _reset_connection(self):
        # Keep the member (and its partitions): only the connection is new. Records polled but not
        # committed are read again from the committed offsets.
        connection.close()
        if self.consumer is not None:
            self.consumer.rewind()

    def _shutdown(self):
        logger.info("worker for group %s stopping after %d record(s)", self.group, self.processed)
        if self.consumer is not None:
            with contextlib.suppress(OperationalError, InterfaceError):
                self.consumer.close(commit=False)
        connection.close()
        logger.info("worker for group %s stopped", self.group)

    def stop(self):
        self.stop_event.set()
