"""The outbox relay: deliver committed events in order per aggregate, then mark them delivered."""
import logging
import time

import psycopg
from django.db import InterfaceError, OperationalError, transaction

from outbox import brokers, outbox
from outbox.storage import events as storage
from queueing import consumer, loops, partitioner, producer, topics, types

logger = logging.getLogger("sluice.relay")
CHANNEL = "sluice_outbox"


def deliver(rows, publisher=None):
    """Deliver claimed events (caller's transaction), in claim order.

    To Sluice topics: per topic and partition one append, in this transaction, so delivery and the
    mark "delivered" commit together. An event's key (default: its aggregate id) picks the
    partition, so one aggregate's events stay in one partition, in order. To external brokers: one
    confirmed publish per event; if the transaction then fails, the event is published again later
    (at least once: consume it through the inbox).
    """
    sender = producer.Producer()
    batches = {}
    for seq, event_id, aggregate_type, aggregate_id, event_type, payload, headers, destination, key, created_at, _ in rows:
        envelope = outbox.cloudevent(event_id, aggregate_type, aggregate_id, event_type, payload, created_at)
        record_headers = {**(headers or {}), "ce_id": str(event_id), "ce_type": event_type}
        topic = outbox.validate_destination(destination)
        if topic is None:
            if publisher is None:
                raise RuntimeError("an external destination needs a publisher")
            publisher.publish(destination, envelope, record_headers)
            continue
        info = topics.cached_topic(topic)
        record_key = (key or aggregate_id).encode()
        value, value_format = producer.encode_value(envelope)
        partition = partitioner.partition_for_key(record_key, info.partition_count)
        batches.setdefault((info, partition), []).append(
            types.OutgoingRecord(record_key, value, value_format, record_headers)
        )
    for (info, partition), records in batches.items():
        sender.append(info, partition, records)


class Relay(loops.Loop):
    """Moves committed outbox events to their destinations; several relays may run.

    Delivery to a Sluice topic and the mark "delivered" commit together: exactly once. A batch that
    fails is retried event by event, so one poison event only holds up its own aggregate.
    """

    name = "outbox relay"

    def __init__(self, *, batch=200, backoff_ms=(500, 60_000), prune_after_s=None, fallback=1.0):
        super().__init__()
        self.batch = batch
        self.backoff_ms = backoff_ms
        self.prune_after_s = prune_after_s
        self.fallback = fallback
        self.listener = None
        self.delivered = 0
        self._last_prune = 0.0
        self.publisher = brokers.Publisher()

    def run_once(self):
        """Deliver one batch; return True if more is likely waiting."""
        try:
            with transaction.atomic():
                rows = storage.claim_events(limit=self.batch)
                if rows:
                    deliver(rows, self.publisher)
                    storage.mark_delivered(seqs=[r[0] for r in rows])
        except (OperationalError, InterfaceError):
            raise
        except Exception as error:  # noqa: BLE001 - isolate the event that fails
            logger.warning("outbox batch failed (%s); delivering one by one", error)
            return self._one_by_one()
        self.delivered += len(rows)
        self._maybe_prune()
        # A claim takes one event per aggregate, so an aggregate's next event may already be waiting.
        return bool(rows)

    def _one_by_one(self):
        """Deliver up to a batch, each event in its own transaction; a failing one is put back with
        a back-off (its aggregate's later events wait behind it, other aggregates go on)."""
        for _ in range(self.batch):
            row = None
            try:
                with transaction.atomic():
                    rows = storage.claim_events(limit=1)
                    if not rows:
                        return False
                    row = rows[0]
                    deliver(rows, self.publisher)
                    storage.mark_delivered(seqs=[row[0]])
                self.delivered += 1
            except (OperationalError, InterfaceError):
                raise
            except Exception as error:  # noqa: BLE001 - recorded on the event, retried later
                attempts = row[10] + 1
                delay = min(self.backoff_ms[1], self.backoff_ms[0] * 2 ** min(attempts - 1, 20))
                storage.mark_failed(seq=row[0], error=f"{type(error).__name__}: {error}", delay_ms=delay)
                logger.warning("outbox event %s failed (attempt %d), retrying in %d ms: %s",
                               row[1], attempts, delay, error)
        return False

    def _maybe_prune(self):
        if self.prune_after_s and time.monotonic() - self._last_prune > 60:
            self._last_prune = time.monotonic()
            removed = storage.prune_delivered(older_than_s=self.prune_after_s, limit=10_000)
            if removed:
                logger.info("pruned %d delivered outbox event(s)", removed)

    def wait(self):
        if self.listener is None or self.listener.closed:
            try:
                self.listener = consumer.listen_connection([CHANNEL])
            except psycopg.Error as error:
                logger.warning("LISTEN failed (%s); polling every %.1fs", error, self.fallback)
                self.stop_event.wait(self.fallback)
                return
        try:
            for _ in self.listener.notifies(timeout=self.fallback, stop_after=1):
                pass
        except psycopg.Error:
            self.listener.close()

    def close(self):
        if self.listener is not None:
            self.listener.close()
        self.publisher.close()
        logger.info("delivered %d outbox event(s)", self.delivered)
