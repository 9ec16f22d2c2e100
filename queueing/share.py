"""Share groups (concurrent mode, KIP-932): many members per partition, per-record acknowledgement."""
import datetime
import logging
import multiprocessing.connection
import os
import random
import socket
import time
import uuid

import psycopg
from django.conf import settings
from django.db import transaction

from queueing import exceptions, groups, models, retries, types, wakeups
from queueing.storage import share as storage

logger = logging.getLogger("sluice.share")

RELEASE, REJECT, FAIL, DEFER = "release", "reject", "fail", "defer"
ACCEPT = "accept"


def configure_group(name, *, lock_duration_ms=None, **policy):
    """Create or change a share group's lock duration and retry policy (delivery_limit, backoff,
    backoff_base_ms, backoff_max_ms, backoff_levels_ms, dead_letter_topic)."""
    groups.validate_group_name(name)
    fields = retries.validate(**policy)
    if lock_duration_ms is not None:
        if not isinstance(lock_duration_ms, int) or not 100 <= lock_duration_ms <= 86_400_000:
            raise exceptions.InvalidArgument(reason="lock_duration_ms must be between 100 and 86400000")
        fields["lock_duration_ms"] = lock_duration_ms
    group, _ = models.ShareGroup.objects.get_or_create(name=name, defaults=_group_defaults())
    for field, value in fields.items():
        setattr(group, field, value)
    group.save()
    return group


def delete_group(name):
    """Delete a share group with its windows, members and unfinished deliveries (records held are
    dropped with it); return whether it existed."""
    with transaction.atomic():
        group = models.ShareGroup.objects.select_for_update().filter(name=name).first()
        if group is None:
            return False
        # Deliveries name their group by id, without a foreign key: they go by hand.
        models.ShareDelivery.objects.filter(group_id=group.id).delete()
        group.delete()
    return True


def _group_defaults():
    return {"lock_duration_ms": settings.SLUICE["LOCK_DURATION_MS"]}


class ShareConsumer:
    """A member of a share group: records are acquired with a lock and acknowledged one by one.

    `poll()` acquires records from any partition of the subscribed topics (other members get other
    records of the same partitions). Acknowledge each with `accept`, `release` (optionally after a
    delay), `reject` (dead-letter now) or `fail` (the policy's back-off, then the dead-letter topic
    past the delivery limit); `renew` extends locks. Acknowledgements are batched and sent by
    `flush()`, which the next `poll()` and `close()` call. A record whose lock expires is delivered
    again and that counts as a delivery.

    With ordered=True a poll acquires from the topics in the order given, filling from the first
    before it takes any record of the next (strict priority bands); `subscribe()` changes the
    topics of a member that has joined.

    With durable_polls=False a poll (its acquisitions and the acceptances sent with it) commits
    without waiting for the WAL flush (storage.poll): a server crash may deliver those records again.
    """

    def __init__(self, group, topics, *, auto_offset_reset=types.OffsetReset.LATEST, max_records=100,
                 client_id="", lock_duration_ms=None, ordered=False, listen=True, durable_polls=True):
        self.topics = groups.validate_subscription(
            group, topics, batch=max_records, batch_name="max_records", batch_limit=10_000
        )
        self.ordered = ordered
        self._order = list(dict.fromkeys(topics))  # the topics in the order a poll fills from
        self.group = group
        self.auto_offset_reset = types.OffsetReset(auto_offset_reset)
        self.max_records = max_records
        self.client_id = client_id
        self.lock_duration_ms = lock_duration_ms
        self.listen = listen  # False: the caller waits for records itself (poll(timeout=0) only)
        self.durable_polls = durable_polls  # False: polls commit without waiting for the WAL (storage.poll)
        self.member_id = f"{client_id or 'share'}-{uuid.uuid4().hex[:16]}"
        self.fallback_interval = settings.SLUICE["POLL_FALLBACK_MS"] / 1000
        self.group_row = None
        self._topics = {}  # topic_id -> Topic row
        self._topic_ids = {}
        self._policies = {}  # topic_id -> retries.Policy
        self._slots = []  # (topic_id, partition)
        self._pending = []  # (record, kind, delay_ms, error, traceback): releases, rejects, failures
        self._accepts = {}  # (topic_id, partition) -> {offset: record}
        self._accepts_since = {}  # (topic_id, partition) -> when its oldest unsent acceptance was made
        self._listener = None
        self._waiter = wakeups.Waiter(wakeups.APPENDS, f"share member {self.member_id} of {group}")
        self._keys = frozenset()
        self._last_seen = 0.0
        self.refused = []  # records whose acknowledgement was refused (lock lost), until flush() reports them
        self.closed = False

    # Membership ---------------------------------------------------------------------------

    def join(self):
        """Join the group now rather than at the first poll: to settle records already held under
        this member id (a member that lives across requests, queueing/remote.py)."""
        if self.group_row is None:
            self._join()

    def _join(self):
        group, _ = models.ShareGroup.objects.get_or_create(name=self.group, defaults=_group_defaults())
        self.group_row = group
        self._open_topics()
        now = groups.db_now()
        # Members gone without a goodbye (SIGKILL) hold nothing: their locks expire by themselves.
        timeout = datetime.timedelta(milliseconds=settings.SLUICE["SESSION_TIMEOUT_MS"])
        models.ShareGroupMember.objects.filter(group=group, last_heartbeat__lt=now - timeout).delete()
        models.ShareGroupMember.objects.update_or_create(
            id=self.member_id,
            defaults={"group": group, "client_id": self.client_id[:255], "host": f"{socket.gethostname()}/{os.getpid()}",
                      "topics": self.topics, "joined_at": now, "last_heartbeat": now},
        )
        self._last_seen = time.monotonic()
        self._listen()

    def _open_topics(self):
        """Read the subscribed topics and give the group a window on each of their partitions."""
        rows = {t.name: t for t in models.Topic.objects.filter(name__in=self.topics)}
        for name in self.topics:
            if name not in rows:
                raise exceptions.TopicNotFound(name=name)
        earliest = self.auto_offset_reset == types.OffsetReset.EARLIEST
        self._topics = {t.id: t for t in rows.values()}
        self._topic_ids = {t.name: t.id for t in rows.values()}
        self._policies = {t.id: retries.resolve(self.group_row, t) for t in rows.values()}
        for topic in rows.values():
            storage.ensure_share_partitions(group_id=self.group_row.id, topic_id=topic.id, earliest=earliest)
        self._slots = list(
            models.SharePartition.objects.filter(group=self.group_row, topic_id__in=self._topics)
            .values_list("topic_id", "partition")
        )
        self._keys = wakeups.partition_keys(self._slots)

    def _listen(self):
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if not self.listen:
            return
        try:
            self._listener = wakeups.listen_connection([f"sluice_t{t}" for t in self._topics])
        except psycopg.Error as error:
            self._listener = None
            logger.warning("LISTEN connection failed (%s); polling every %.1fs", error, self.fallback_interval)

    def subscribe(self, topics):
        """Change the subscription (and, if ordered, the order) of this member. Records of topics
        left stay held until acknowledged; acknowledge them before, as they can no longer be."""
        names = groups.validate_subscription(self.group, topics, batch=self.max_records, batch_name="max_records",
                                             batch_limit=10_000)
        if names == self.topics and list(dict.fromkeys(topics)) == self._order:
            return
        self.flush()
        self.topics, self._order = names, list(dict.fromkeys(topics))
        if self.group_row is None:
            return
        self._open_topics()
        models.ShareGroupMember.objects.filter(id=self.member_id).update(topics=self.topics)
        self._listen()

    @property
    def lock_ms(self):
        return self.lock_duration_ms or self.group_row.lock_duration_ms

    def _heartbeat(self):
        if time.monotonic() - self._last_seen >= 3:
            models.ShareGroupMember.objects.filter(id=self.member_id).update(last_heartbeat=groups.db_now())
            self._last_seen = time.monotonic()

    # Reading ------------------------------------------------------------------------------

    def poll(self, timeout=1.0, max_records=None, wake=()):
        """Send pending acknowledgements, then acquire up to max_records records, waiting up to timeout.

        wake: objects with a fileno() (a worker's pipes to its processes) whose becoming readable
        ends the wait too, with nothing acquired: the caller has something else to see to.
        """
        if self.closed:
            raise exceptions.InvalidArgument(reason="the consumer is closed")
        if self.group_row is None:
            self._join()
        if self._pending:
            self.flush()
        deadline = time.monotonic() + max(0.0, timeout)
        limit = max_records or self.max_records
        while True:
            self._heartbeat()
            self._waiter.drain(self._wait)
            records = self._acquire(limit)
            self._waiter.found(self._listener, len(records))
            if records:
                return records
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return records
            woken = []
            listen = (lambda seconds: self._wait_or_wake(seconds, wake, woken)) if wake else self._wait
            self._waiter.sleep(self._listener, self._keys, min(remaining, self.fallback_interval), listen)
            if woken:
                return records

    @property
    def late_wakeups(self):
        """Waits that ended without a NOTIFY while records were committed for this member."""
        return self._waiter.late_wakeups

    def _acquire(self, limit):
        records = []
        slots = list(self._slots)
        random.shuffle(slots)  # members start on different partitions, so they rarely meet
        if self.ordered:
            # Strict priority: every partition of a topic before any of the next (a stable sort
            # keeps the shuffle within a topic).
            rank = {self._topic_ids[name]: i for i, name in enumerate(self._order)}
            slots.sort(key=lambda slot: rank[slot[0]])
        for slot in slots:
            room = limit - len(records)
            if room > 0:
                records.extend(self._poll_slot(slot, room))
        # Acceptances of partitions this poll did not reach ride with their next acquisition (one
        # statement, not two), unless they have waited a quarter of the lock: then they go now.
        overdue = time.monotonic() - self.lock_ms / 4000
        for slot in [s for s, since in self._accepts_since.items() if since <= overdue]:
            self._poll_slot(slot, 0)
        return records

    def _poll_slot(self, slot, limit):
        """Send the slot's acceptances and acquire up to limit of its records, in one statement."""
        topic_id, partition = slot
        topic, policy = self._topics[topic_id], self._policies[topic_id]
        accepts = self._accepts.pop(slot, {})
        self._accepts_since.pop(slot, None)
        got = storage.poll(
            group_id=self.group_row.id, topic_id=topic_id, partition=partition, member_id=self.member_id,
            limit=limit, lock_ms=self.lock_ms, delivery_limit=policy.delivery_limit,
            accept=[(offset, record.delivery_count) for offset, record in accepts.items()],
            durable=self.durable_polls,
        )
        self.refused.extend(accepts[offset] for offset in got.refused)
        if got.expired:
            models.DeliveryAttempt.objects.bulk_create(
                models.DeliveryAttempt(group_name=self.group, topic_name=topic.name, partition=partition,
                                       offset=offset, attempt=count, member_id=member or "",
                                       outcome=models.DeliveryAttempt.Outcome.EXPIRED)
                for offset, count, member in got.expired
            )
        for offset, _ in got.dead:
            self._dead_letter_range(topic, policy, partition, offset)
        return [self._record(topic, partition, row) for row in got.records]

    def _dead_letter_range(self, topic, policy, partition, offset):
        """Dead-letter a range whose last delivery's lock ran out, removing it in the same transaction."""
        reason = "lock expired on the last delivery"
        with transaction.atomic():
            rows = storage.claim_dead(group_id=self.group_row.id, topic_id=topic.id, partition=partition,
                                      offset=offset, delivery_limit=policy.delivery_limit)
            for row in rows:
                record = self._record(topic, partition, row)
                retries.dead_letter(policy=policy, group=self.group, record=record, attempts=record.delivery_count,
                                    error=reason)
                retries.record_attempt(group=self.group, record=record, attempt=record.delivery_count, member_id="",
                                       outcome=models.DeliveryAttempt.Outcome.DEAD_LETTERED, error=reason)

    @staticmethod
    def _record(topic, partition, row):
        # Rows are read in binary, so key and value arrive as bytes; positional, as members build
        # thousands a second.
        offset, key, value, value_format, headers, timestamp, count = row
        return types.Record(topic.name, partition, offset, key, value, value_format, headers or {}, timestamp, count)

    def _wait(self, seconds):
        """Wait for a NOTIFY up to seconds (0: take those already here); return whether one came.
        A lost LISTEN connection means polling until the next join."""
        return wakeups.heard(self._listener, seconds, who=f"share member {self.member_id}")

    def _wait_or_wake(self, seconds, wake, woken):
        """_wait, ending also when one of wake is readable (then noted in woken, and True)."""
        deadline = time.monotonic() + seconds
        while True:
            listener = self._listener if self._listener is not None and not self._listener.closed else None
            ready = multiprocessing.connection.wait([*wake, *([listener] if listener else [])],
                                                    max(0.0, deadline - time.monotonic()))
            if any(item is not listener for item in ready):
                woken.append(True)
                return True
            if ready and self._wait(0):
                return True
            if time.monotonic() >= deadline:
                return False

    # Acknowledging ------------------------------------------------------------------------

    def accept(self, record):
        """The record was processed: it is finished for this group (sent with the next poll or flush)."""
        slot = (self._topic_ids[record.topic], record.partition)
        self._accepts.setdefault(slot, {})[record.offset] = record
        self._accepts_since.setdefault(slot, time.monotonic())

    def release(self, record, delay=0.0):
        """Give the record back, to be delivered again after delay seconds (counts as a delivery)."""
        self._pending.append((record, RELEASE, int(max(0.0, delay) * 1000), "", ""))

    def reject(self, record, reason=""):
        """The record can never be processed: dead-letter it now."""
        self._pending.append((record, REJECT, 0, reason, ""))

    def defer(self, record, delay=0.0):
        """Give the record back, to be delivered again after delay seconds, without counting this
        delivery (the member could not run it yet: a limit, not a failure)."""
        self._pending.append((record, DEFER, int(max(0.0, delay) * 1000), "", ""))

    def fail(self, record, error="", traceback=""):
        """The handler failed: retry after the policy's back-off, or dead-letter past the delivery limit."""
        self._pending.append((record, FAIL, None, error, traceback))

    def renew(self, records):
        """Extend the locks of held records by the lock duration; return those no longer held."""
        items = [self._item(r) for r in records]
        held = storage.renew_deliveries(
            group_id=self.group_row.id, member_id=self.member_id, items=items, lock_ms=self.lock_ms
        )
        return [r for r, item in zip(records, items) if item[:3] not in held]

    def _item(self, record):
        return (self._topic_ids[record.topic], record.partition, record.offset, record.delivery_count)

    def flush(self):
        """Send the pending acknowledgements; return the records whose acknowledgement was refused.

        A refused acknowledgement means the lock was lost and the record re-acquired: it will be
        (or was) processed again elsewhere.
        """
        for slot in list(self._accepts):
            self._poll_slot(slot, 0)
        pending, self._pending = self._pending, []
        by_slot = {}
        for entry in pending:
            by_slot.setdefault(self._item(entry[0])[:2], []).append(entry[0].offset)
        for (topic_id, partition), offsets in by_slot.items():
            storage.split(group_id=self.group_row.id, topic_id=topic_id, partition=partition,
                          member_id=self.member_id, offsets=offsets)
        releases, dead, deferrals = [], [], []
        for record, kind, delay_ms, error, tb in pending:
            if kind == DEFER:
                deferrals.append((record, delay_ms))
                continue
            policy = self._policies[self._item(record)[0]]
            if kind == REJECT or record.delivery_count >= policy.delivery_limit:
                dead.append((record, kind, error, tb))
                continue
            if kind == FAIL:
                delay_ms = policy.delay_ms(record.delivery_count)
                retries.record_attempt(group=self.group, record=record, attempt=record.delivery_count,
                                       member_id=self.member_id, outcome=models.DeliveryAttempt.Outcome.FAILED,
                                       error=error, traceback=tb)
            releases.append((record, delay_ms))
        if releases:
            items = [self._item(r) for r, _ in releases]
            done = storage.release_deliveries(group_id=self.group_row.id, member_id=self.member_id, items=items,
                                              delays_ms=[d for _, d in releases])
            self.refused.extend(r for (r, _), item in zip(releases, items) if item[:3] not in done)
        if deferrals:
            items = [self._item(r) for r, _ in deferrals]
            done = storage.defer_deliveries(group_id=self.group_row.id, member_id=self.member_id, items=items,
                                            delays_ms=[d for _, d in deferrals])
            self.refused.extend(r for (r, _), item in zip(deferrals, items) if item[:3] not in done)
        for record, kind, error, tb in dead:
            if not self._dead_letter(record, kind, error, tb):
                self.refused.append(record)
        refused, self.refused = self.refused, []
        if refused:
            logger.info("%d acknowledgement(s) refused in %s: locks lost", len(refused), self.group)
        return refused

    def forget_pending(self):
        """Drop acknowledgements not sent (their connection is gone): those records' locks expire and
        they are delivered again."""
        self._pending.clear()
        self._accepts.clear()
        self._accepts_since.clear()

    def _dead_letter(self, record, kind, error, tb):
        """Remove the delivery and write the dead letter in one transaction; False if the lock was lost."""
        item = self._item(record)
        policy = self._policies[item[0]]
        with transaction.atomic():
            done = storage.finish_deliveries(group_id=self.group_row.id, member_id=self.member_id, items=[item])
            if not done:
                return False
            reason = error or ("rejected" if kind == REJECT else "delivery limit reached")
            retries.dead_letter(policy=policy, group=self.group, record=record, attempts=record.delivery_count,
                                error=reason)
            retries.record_attempt(group=self.group, record=record, attempt=record.delivery_count,
                                   member_id=self.member_id, outcome=models.DeliveryAttempt.Outcome.DEAD_LETTERED,
                                   error=reason, traceback=tb)
        return True

    def close(self):
        """Send pending acknowledgements and leave; records still held become available when their
        locks expire, or at once with release_held=True semantics of the worker."""
        if self.closed:
            return
        self.closed = True
        try:
            if self.group_row is not None:
                self.flush()
                models.ShareGroupMember.objects.filter(id=self.member_id).delete()
        finally:
            if self._listener is not None:
                self._listener.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # Acknowledging inside the caller's transaction ----------------------------------------

    def settle(self, record, fate, *, delay=0.0, error="", traceback=""):
        """Acknowledge one held record now, in the caller's transaction: ACCEPT it, RELEASE it to be
        delivered again after delay seconds, DEFER it (the same, without counting the delivery), or
        REJECT it to the dead-letter topic.

        Nothing is batched, so what the caller writes beside it (a task's result, say) commits or
        rolls back with the acknowledgement. Returns False, writing nothing, if the member no longer
        holds the record (its lock lapsed and it was acquired again): the caller should then roll
        back its own writes. A release with an error is recorded as a failed attempt.
        """
        topic_id, partition, offset, count = item = self._item(record)
        base = {"group_id": self.group_row.id, "member_id": self.member_id}
        with transaction.atomic():
            storage.split(**base, topic_id=topic_id, partition=partition, offsets=[offset])
            if fate == DEFER:
                return bool(storage.defer_deliveries(**base, items=[item], delays_ms=[int(max(0.0, delay) * 1000)]))
            if fate == RELEASE:
                done = storage.release_deliveries(**base, items=[item], delays_ms=[int(max(0.0, delay) * 1000)])
                if done and error:
                    retries.record_attempt(group=self.group, record=record, attempt=count, member_id=self.member_id,
                                           outcome=models.DeliveryAttempt.Outcome.FAILED, error=error,
                                           traceback=traceback)
                return bool(done)
            if fate not in (ACCEPT, REJECT):
                raise exceptions.InvalidArgument(
                    reason=f"fate must be {ACCEPT!r}, {RELEASE!r}, {DEFER!r} or {REJECT!r}")
            done = storage.finish_deliveries(**base, items=[item])
            if done and fate == REJECT:
                policy = self._policies[topic_id]
                reason = error or "rejected"
                retries.dead_letter(policy=policy, group=self.group, record=record, attempts=count, error=reason)
                retries.record_attempt(group=self.group, record=record, attempt=count, member_id=self.member_id,
                                       outcome=models.DeliveryAttempt.Outcome.DEAD_LETTERED, error=reason,
                                       traceback=traceback)
            return bool(done)

    def accept_now(self, records):
        """ACCEPT held records now, in the caller's transaction, as settle does for one; return the
        records refused (their locks were lost and they were acquired again: the caller discards its
        writes for those only). A range acquired together and accepted whole goes in one statement;
        the rest are split (one call a partition) and finished in one more."""
        if not records:
            return []
        items = [self._item(r) for r in records]
        base = {"group_id": self.group_row.id, "member_id": self.member_id}
        done = storage.finish_ranges(**base, items=items)
        rest = [item for item in items if item[:3] not in done]
        by_slot = {}
        for item in rest:
            by_slot.setdefault(item[:2], []).append(item[2])
        for (topic_id, partition), offsets in by_slot.items():
            storage.split(**base, topic_id=topic_id, partition=partition, offsets=offsets)
        done |= storage.finish_deliveries(**base, items=rest)
        return [r for r, item in zip(records, items) if item[:3] not in done]

    def heartbeat(self):
        """Tell the group this member is alive. poll() does it; a member busy for long between
        polls (a task worker whose processes are all running) calls it to stay listed."""
        if self.group_row is not None and not self.closed:
            self._heartbeat()


def prepare_group(name, topics, *, lock_duration_ms=None):
    """Create (or change) a share group and open its windows on topics at their first record, before
    any member joins: its backlog shows at once, and no record sent before the first member is
    skipped. Return the group."""
    group = configure_group(name, lock_duration_ms=lock_duration_ms)
    opener = ShareConsumer(name, topics, auto_offset_reset=types.OffsetReset.EARLIEST, listen=False)
    opener.group_row = group
    opener._open_topics()
    return group


def acknowledger(group, topics, member_id):
    """A handle that settles, from any process, records that member_id of group holds (it does not
    join the group): for consumers that hand what they acquired to another process to acknowledge,
    as django-q2's pusher does to its monitor. Its settle() and accept_now() act as that member,
    and are refused as the member's own would be once the lock lapsed; raise GroupNotFound."""
    # earliest: should the group have no window on a topic yet, opening one must skip nothing.
    handle = ShareConsumer(group, topics, auto_offset_reset=types.OffsetReset.EARLIEST, listen=False)
    handle.member_id = member_id
    handle.group_row = models.ShareGroup.objects.filter(name=group).first()
    if handle.group_row is None:
        raise exceptions.GroupNotFound(group=group)
    handle._open_topics()
    handle.closed = True  # it never polls, flushes or leaves: settle() and accept_now() write at once
    return handle


def expedite(group, records):
    """Make records of a group that were handed back with a delay available now (what they waited
    for came sooner); records held by a member or already available are left alone. records are
    (topic name, partition, offset); return how many changed. Joins the caller's transaction."""
    if not records:
        return 0
    group_id = models.ShareGroup.objects.filter(name=group).values_list("id", flat=True).first()
    names = {topic for topic, _, _ in records}
    ids = dict(models.Topic.objects.filter(name__in=names).values_list("name", "id"))
    items = [(ids[t], p, o) for t, p, o in records if t in ids]
    if group_id is None or not items:
        return 0
    return len(storage.expedite_deliveries(group_id=group_id, items=items))
