"""Worker loops: ordered groups (offset order, retry in place, then dead letter) and share groups."""
import contextlib
import logging
import time
import traceback

from django.db import transaction

from queueing import consumer as consumer_module
from queueing import exceptions, loops, models, retries, share, types

logger = logging.getLogger("sluice.worker")
CONNECTION_ERRORS = loops.CONNECTION_ERRORS


class Outcome:
    """What became of one delivery attempt."""

    def __init__(self, kind, *, delay=None, error="", tb=""):
        self.kind, self.delay, self.error, self.tb = kind, delay, error, tb


def redriven_elsewhere(record, group):
    """Whether record was redriven to another group than group (replay's redrive): passed over."""
    target = (record.headers or {}).get(types.REDRIVE_GROUP)
    return target is not None and target != group


def attempt(function, record):
    """Run a handler once and classify the result: done, retry (with an optional delay), reject, fail."""
    try:
        function(record)
        return Outcome("done")
    except CONNECTION_ERRORS:
        raise
    except exceptions.Retry as request:
        return Outcome("retry", delay=request.delay, error=request.reason or "retry requested")
    except exceptions.Reject as request:
        return Outcome("reject", error=request.reason or "rejected by the handler")
    except Exception as error:  # noqa: BLE001 - one bad record must not crash the worker
        return Outcome("fail", error=f"{type(error).__name__}: {error}", tb=traceback.format_exc())


class GroupLoop(loops.Loop):
    """A worker of one group: polls (which waits by itself), and waits for topics that are missing."""

    name = "worker"

    def __init__(self, group, subscriptions, *, poll_timeout=1.0):
        super().__init__()
        self.group = group
        self.subscriptions = subscriptions
        self.poll_timeout = poll_timeout
        self.processed = 0
        self.name = f"{self.name} for group {group} on {', '.join(sorted(subscriptions))}"
        self.role = f"group {group}"

    def wait(self):
        """The poll already waited for records."""

    @property
    def late_wakeups(self):
        """Waits of this worker's consumer that ended without a NOTIFY while records were committed."""
        return self.consumer.late_wakeups if self.consumer is not None else 0

    def recover(self, error):
        if isinstance(error, exceptions.TopicNotFound):
            # A worker may start before its topics exist: wait for them rather than exit.
            logger.warning("%s; waiting for it (create it with manage.py topics create)", error)
            self.consumer = None
            self.stop_event.wait(5.0)
            return True
        return False


class Worker(GroupLoop):
    """Runs an ordered group's handlers: one record at a time per partition, offsets committed per batch.

    A failed record is retried in place after the policy's back-off, so the partition keeps its
    order; past the delivery limit it is dead-lettered and the offset commit that passes it is in
    the same transaction. A lost connection is re-opened and uncommitted records are read again, so
    handlers must tolerate a redelivery (at-least-once).
    """

    def __init__(self, group, subscriptions, *, max_poll_records=100, poll_timeout=1.0, consumer_options=None):
        super().__init__(group, subscriptions, poll_timeout=poll_timeout)
        self.max_poll_records = max_poll_records
        self.consumer_options = consumer_options or {}
        self.consumer = None
        self._policies = {}

    def _new_consumer(self):
        resets = {s.auto_offset_reset for s in self.subscriptions.values()}
        options = {"auto_offset_reset": resets.pop() if len(resets) == 1 else types.OffsetReset.EARLIEST}
        options.update(self.consumer_options)
        member = consumer_module.Consumer(
            self.group, sorted(self.subscriptions), enable_auto_commit=False,
            max_poll_records=self.max_poll_records, client_id="worker", **options,
        )
        return member

    def policy(self, topic):
        if topic not in self._policies:
            group_row, _ = models.ConsumerGroup.objects.get_or_create(name=self.group)
            self._policies[topic] = retries.resolve(group_row, models.Topic.objects.get(name=topic))
        return self._policies[topic]

    def run_once(self):
        """Poll once and handle what came; return True if more work is likely."""
        if self.consumer is None:
            self.consumer = self._new_consumer()
        records = self.consumer.poll(timeout=self.poll_timeout)
        done = {}
        for record in records:
            if self.stop_event.is_set():
                break
            if redriven_elsewhere(record, self.group):
                # Committed past with the records around it, never handled here.
                done[types.TopicPartition(topic=record.topic, partition=record.partition)] = record.offset + 1
                continue
            if not self._handle(record):
                break
            done[types.TopicPartition(topic=record.topic, partition=record.partition)] = record.offset + 1
            self.processed += 1
        if done:
            try:
                # Stored with the next poll's fetch, in its round trip; close() stores what is left.
                self.consumer.commit_async(done)
            except exceptions.CommitFailed as error:
                logger.info("commit refused, re-syncing: %s", error)
        # Records polled but not handled (stop requested, or fenced) are read again.
        for tp, offset in self._unhandled(records, done).items():
            with contextlib.suppress(exceptions.InvalidArgument):
                self.consumer.seek(tp, offset)
        return bool(records)

    @staticmethod
    def _unhandled(records, done):
        first = {}
        for record in records:
            tp = types.TopicPartition(topic=record.topic, partition=record.partition)
            if record.offset >= done.get(tp, 0) and tp not in first:
                first[tp] = record.offset
        return first

    def _handle(self, record):
        """Run the handler until it succeeds or the record is dead-lettered; False if stopped first."""
        policy = self.policy(record.topic)
        function = self.subscriptions[record.topic].function
        number = 0
        while not self.stop_event.is_set():
            number += 1
            outcome = attempt(function, record)
            if outcome.kind == "done":
                return True
            if outcome.kind == "reject" or number >= policy.delivery_limit:
                return self._dead_letter(record, number, outcome, policy)
            retries.record_attempt(group=self.group, record=record, attempt=number, member_id=self.consumer.member_id,
                                   outcome=models.DeliveryAttempt.Outcome.FAILED, error=outcome.error,
                                   traceback=outcome.tb)
            delay = outcome.delay if outcome.delay is not None else policy.delay_ms(number) / 1000
            logger.warning("handler failed on %s-%s@%s (attempt %d of %d), retrying in %.2fs: %s",
                           record.topic, record.partition, record.offset, number, policy.delivery_limit, delay,
                           outcome.error, extra={"attempt": number})
            if self.stop_event.wait(delay):
                return False
        return False

    def _dead_letter(self, record, number, outcome, policy):
        """Dead-letter the record and commit past it in one transaction; False if the commit was fenced."""
        tp = types.TopicPartition(topic=record.topic, partition=record.partition)
        try:
            with transaction.atomic():
                letter = retries.dead_letter(policy=policy, group=self.group, record=record, attempts=number,
                                             error=outcome.error)
                retries.record_attempt(group=self.group, record=record, attempt=number,
                                       member_id=self.consumer.member_id,
                                       outcome=models.DeliveryAttempt.Outcome.DEAD_LETTERED,
                                       error=outcome.error, traceback=outcome.tb)
                self.consumer.commit({tp: record.offset + 1})
        except exceptions.CommitFailed:
            logger.info("dead-lettering %s@%s fenced by a rebalance; the new owner will retry", tp, record.offset)
            return False
        logger.warning("dead-lettered %s@%s to %s-%s@%s after %d attempt(s): %s", tp, record.offset,
                       letter.topic, letter.partition, letter.offset, number, outcome.error)
        return True

    def reconnected(self):
        # Keep the member (and its partitions): only the connection is new. Records polled but not
        # committed are read again from the committed offsets.
        if self.consumer is not None:
            self.consumer.rewind()

    def close(self):
        if self.consumer is not None:
            self.consumer.close(commit=False)


class ShareWorker(GroupLoop):
    """Runs a share group's handlers: records of every partition spread over all workers, each
    acknowledged on its own; failures go back after the back-off, past the limit to the dead-letter
    topic. On stop, records acquired but not handled are released at once."""

    name = "share worker"

    def __init__(self, group, subscriptions, *, max_records=50, poll_timeout=1.0, consumer_options=None):
        super().__init__(group, subscriptions, poll_timeout=poll_timeout)
        self.max_records = max_records
        self.consumer_options = consumer_options or {}
        self.consumer = None

    def run_once(self):
        if self.consumer is None:
            resets = {s.auto_offset_reset for s in self.subscriptions.values()}
            self.consumer = share.ShareConsumer(
                self.group, sorted(self.subscriptions), max_records=self.max_records, client_id="share-worker",
                auto_offset_reset=resets.pop() if len(resets) == 1 else types.OffsetReset.EARLIEST,
                **self.consumer_options,
            )
        records = self.consumer.poll(timeout=self.poll_timeout)
        acquired_at = time.monotonic()
        for index, record in enumerate(records):
            if self.stop_event.is_set():
                for rest in records[index:]:
                    self.consumer.release(rest)
                break
            if time.monotonic() - acquired_at > self.consumer.lock_ms / 2000:
                # Half the lock has gone on earlier records: extend it for the rest of the batch.
                self.consumer.renew(records[index:])
                acquired_at = time.monotonic()
            if redriven_elsewhere(record, self.group):
                self.consumer.accept(record)  # finished for this group, never handled here
                continue
            outcome = attempt(self.subscriptions[record.topic].function, record)
            if outcome.kind == "done":
                self.consumer.accept(record)
                self.processed += 1
            elif outcome.kind == "reject":
                self.consumer.reject(record, reason=outcome.error)
            elif outcome.kind == "retry" and outcome.delay is not None:
                self.consumer.release(record, delay=outcome.delay)
            else:
                self.consumer.fail(record, error=outcome.error, traceback=outcome.tb)
        self.consumer.flush()
        return bool(records)

    def reconnected(self):
        # Acknowledgements not sent are lost with the connection; the records' locks expire and they
        # are delivered again (at-least-once).
        if self.consumer is not None:
            self.consumer.forget_pending()

    def close(self):
        if self.consumer is not None:
            self.consumer.close()

