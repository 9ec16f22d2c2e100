"""The outbox relay: a loop that claims committed events, delivers them, and marks them delivered."""
import logging
import time

import psycopg
import psycopg.errors
from django.conf import settings
from django.db import OperationalError, transaction
from django.db.models import Count, Max, Min, Q
from django.utils import timezone

from outbox import brokers, delivery, exceptions, models, outbox, retention
from outbox.storage import events as storage
from queueing import loops, wakeups

logger = logging.getLogger("sluice.relay")
PRUNE_INTERVAL_S = 60.0
STRIPES = frozenset(range(64))  # the publishers' wake-up keys (wake_relays in outbox/sql/events.sql)
_UNSET = object()


class Relay(loops.Loop):
    """Moves committed outbox events to their destinations; run as many as you like.

    Each batch is one transaction: claim (see claim_events in outbox/sql/events.sql for how several
    relays keep each aggregate's order), deliver and mark delivered (see delivery.deliver), record
    failures with a back-off.
    To a Sluice topic the append commits with the mark: exactly once. To a broker the mark follows
    its confirm: at least once. A relay killed at any point leaves its claimed events undelivered
    (their locks go with its connection), and another relay takes them. run() comes from
    queueing.loops: SIGTERM finishes and commits the batch in hand, a lost database connection is
    re-opened.
    """

    name = "outbox relay"

    def __init__(self, *, batch=200, prune_after_s=_UNSET, inbox_retention_s=_UNSET, fallback=None,
                 backoff_ms=None, publisher=None):
        self.batch = batch
        self.prune_after_s = retention.events_retention_s() if prune_after_s is _UNSET else prune_after_s
        self.inbox_retention_s = retention.inbox_retention_s() if inbox_retention_s is _UNSET else inbox_retention_s
        self.fallback = fallback if fallback is not None else settings.SLUICE["POLL_FALLBACK_MS"] / 1000
        self.backoff_ms = tuple(backoff_ms or getattr(settings, "SLUICE_OUTBOX_BACKOFF_MS", (500, 60_000)))
        super().__init__()
        self.publisher = publisher or brokers.Publisher()
        self.listener = None
        self._waiter = wakeups.Waiter(wakeups.PUBLISHES, "outbox relay")
        self.delivered = self.failed = self.deferred = 0
        self._next_prune = 0.0
        self._careful = False  # the next batch appends in savepoints, after a batch whose append failed

    def run_once(self):
        """Deliver one batch; return True if more events are likely waiting."""
        self._waiter.drain(self._listen)
        try:
            return self._deliver_batch()
        except OperationalError as error:
            if not isinstance(error.__cause__, psycopg.errors.TransactionRollback):
                raise  # a lost connection: the loop reconnects
            # A deadlock or serialization failure rolled the batch back: nothing was delivered or
            # marked, and the events are claimed again at once.
            logger.info("outbox batch rolled back (%s); claiming again", error)
            return True
        except exceptions.BatchAppendFailed as error:
            # Rolled back too; the next batch finds the events that fail, one by one.
            logger.info("%s", error)
            self._careful = True
            return True

    def _deliver_batch(self):
        with transaction.atomic():
            events = storage.claim_events(limit=self.batch)
            if not events:
                result = None
            else:
                result = delivery.deliver(events, self.publisher, backoff=self.backoff_ms, careful=self._careful)
                for event, error, delay in result.failed:
                    storage.mark_failed(seq=event.seq, error=error, delay_ms=delay)
                for event, error, delay in result.deferred:
                    storage.defer_events(seqs=[event.seq], error=error, delay_ms=delay)
        self._careful = False
        if result is not None:
            self._count(result)
        # Busy: publishers need not notify. Events coming due after a failure are not wake-ups.
        self._waiter.found(self.listener, len(events), new=sum(1 for e in events if not e.attempts))
        self.prune()
        # A claim holds at most one run per aggregate; what it left out is worth another claim at once.
        return bool(events)

    def _count(self, result):
        self.delivered += len(result.delivered)
        self.failed += len(result.failed)
        self.deferred += len(result.deferred)
        for event, error, delay in result.failed:
            logger.warning(
                "outbox event %s (%s %s) failed, attempt %d, retrying in %d ms: %s", event.id, event.aggregate_type,
                event.aggregate_id, event.attempts + 1, delay, error,
                extra={"event_id": str(event.id), "seq": event.seq, "attempt": event.attempts + 1},
            )
        if result.deferred:
            logger.warning("%d outbox event(s) deferred: %s", len(result.deferred), result.deferred[0][1])

    def prune(self, *, force=False):
        """Every PRUNE_INTERVAL_S, delete one batch of delivered events and of inbox entries past
        their retention; a full batch brings the next pass forward, so pruning keeps up without
        holding up delivery for long."""
        if not force and time.monotonic() < self._next_prune:
            return 0
        removed = full = 0
        for keep, prune in ((self.prune_after_s, retention.prune_events),
                            (self.inbox_retention_s, retention.prune_inbox)):
            if keep:
                count = prune(older_than_s=keep)
                removed += count
                full = full or count >= retention.PRUNE_BATCH
        self._next_prune = time.monotonic() + (1.0 if full else PRUNE_INTERVAL_S)
        if removed:
            logger.info("pruned %d delivered outbox event(s) and inbox entries", removed)
        return removed

    def wait(self):
        """Sleep until a publish may have committed an event, at most the fallback interval (a lost
        notification only delays a delivery); stop() ends it at once.

        Publishers notify only while a relay waits (see wake_relays in events.sql): the relay asks
        them first, and claims once more before it sleeps.
        """
        if not self._listening():
            self.stop_event.wait(self.fallback)
            return
        self._waiter.sleep(self.listener, STRIPES, self.fallback, self._listen)

    @property
    def late_wakeups(self):
        """Waits that ended without a NOTIFY while events were committed."""
        return self._waiter.late_wakeups

    def _listen(self, seconds):
        """Wait for a NOTIFY up to seconds (0: take those already here), in short slices so that
        stop() takes effect at once; return whether one came, having taken all that came (one
        claim answers them all), or stop() was called (the sleep ends for it too)."""
        deadline = time.monotonic() + seconds
        while self.listener is not None and not self.listener.closed:
            if self.stop_event.is_set():
                return True
            try:
                slice_s = max(0.0, min(deadline - time.monotonic(), wakeups.STOP_SLICE_S))
                if any(True for _ in self.listener.notifies(timeout=slice_s, stop_after=1)):
                    for _ in self.listener.notifies(timeout=0):
                        pass
                    return True
            except psycopg.Error as error:
                logger.warning("LISTEN connection lost (%s); reconnecting", error)
                self.listener.close()
                return False
            if time.monotonic() >= deadline:
                return self.stop_event.is_set()
        return False

    def _listening(self):
        if self.listener is not None and not self.listener.closed:
            return True
        try:
            self.listener = wakeups.listen_connection([outbox.CHANNEL])
        except psycopg.Error as error:
            logger.warning("LISTEN failed (%s); polling every %.1fs", error, self.fallback)
            self.listener = None
        return self.listener is not None

    def recover(self, error):
        # Not a lost connection (the loop handles those): a bug or a surprise must not crash-loop
        # the relay. The batch rolled back; its events are claimed again after the pause.
        logger.exception("outbox relay batch failed (%s); trying again", error)
        self.stop_event.wait(self.fallback)
        return True

    def reconnected(self):
        if self.listener is not None:
            self.listener.close()  # LISTEN again on a fresh connection at the next wait

    def close(self):
        if self.listener is not None:
            self.listener.close()
        self.publisher.close()
        logger.info("outbox relay delivered %d event(s)", self.delivered,
                    extra={"delivered": self.delivered, "failed": self.failed, "deferred": self.deferred})

def backlog():
    """The outbox at a glance: undelivered events, how many back off, the oldest, delivered rows
    kept, and per destination the undelivered events that have failed with their last error."""
    events = models.OutboxEvent.objects
    now = timezone.now()
    summary = events.aggregate(
        undelivered=Count("seq", filter=Q(delivered_at__isnull=True)),
        backing_off=Count("seq", filter=Q(delivered_at__isnull=True, next_attempt_at__gt=now)),
        delivered=Count("seq", filter=Q(delivered_at__isnull=False)),
        oldest=Min("created_at", filter=Q(delivered_at__isnull=True)),
    )
    failing = (events.filter(delivered_at__isnull=True).exclude(last_error="").values("destination")
               .annotate(n=Count("seq"), error=Max("last_error")).order_by("-n")[:20])
    summary["errors"] = [(row["destination"], row["n"], row["error"]) for row in failing]
    return summary


def retry_now(seqs=None):
    """Make undelivered events that back off due at once (those of seqs, or all); return how many.

    Only the wait changes: attempts and the last error stay, and the relay still delivers in order
    per aggregate.
    """
    due = models.OutboxEvent.objects.filter(delivered_at__isnull=True, next_attempt_at__gt=timezone.now())
    if seqs is not None:
        due = due.filter(seq__in=seqs)
    return due.update(next_attempt_at=timezone.now())
