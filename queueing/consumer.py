"""The ordered-group consumer: joins a group, follows its assignment, long-polls, commits offsets."""
import logging
import os
import socket
import threading
import time
import uuid

import psycopg
from django.conf import settings
from django.db import InterfaceError, OperationalError, connection

from queueing import exceptions, groups, models, storage, types, wakeups

logger = logging.getLogger("sluice.consumer")

def _runs(rows):
    """Split fetched rows, which come partition by partition, into ((topic_id, partition), rows)."""
    start, count = 0, len(rows)
    while start < count:
        topic_id, partition = rows[start][0], rows[start][1]
        if rows[-1][0] == topic_id and rows[-1][1] == partition:
            end = count  # the last partition's run: no need to look for its end
        else:
            end = start + 1
            while rows[end][0] == topic_id and rows[end][1] == partition:
                end += 1
        yield (topic_id, partition), rows if start == 0 and end == count else rows[start:end]
        start = end


class Consumer:
    """A member of an ordered consumer group (Kafka semantics).

    Each assigned partition is read by this member alone, in offset order. `poll()` returns records
    after the member's position; `commit()` stores positions, and is refused (CommitFailed) once
    the group has moved to a newer generation, after which the consumer re-syncs by itself. A
    background thread heartbeats, so a slow handler does not lose the member its partitions.
    """

    def __init__(
        self,
        group,
        topics,
        *,
        auto_offset_reset=types.OffsetReset.LATEST,
        enable_auto_commit=True,
        auto_commit_interval_ms=5000,
        max_poll_records=500,
        session_timeout_ms=None,
        heartbeat_interval_ms=None,
        client_id="",
    ):
        config = settings.SLUICE
        self.topics = groups.validate_subscription(
            group, topics, batch=max_poll_records, batch_name="max_poll_records", batch_limit=100_000
        )
        self.group = group
        self.auto_offset_reset = types.OffsetReset(auto_offset_reset)
        self.enable_auto_commit = enable_auto_commit
        self.auto_commit_interval = auto_commit_interval_ms / 1000
        self.max_poll_records = max_poll_records
        self.session_timeout_ms = session_timeout_ms or config["SESSION_TIMEOUT_MS"]
        self.heartbeat_interval = (heartbeat_interval_ms or config["HEARTBEAT_INTERVAL_MS"]) / 1000
        self.fallback_interval = config["POLL_FALLBACK_MS"] / 1000
        self.client_id = client_id
        self.member_id = f"{client_id or 'consumer'}-{uuid.uuid4().hex[:16]}"
        self.assignment = None
        self._positions = {}  # (topic_id, partition) -> next offset to fetch
        self._consumed = {}  # (topic_id, partition) -> offset after the last record handed out
        self._pending = {}  # (topic_id, partition) -> offset to store with the next fetch (commit_async)
        self._names = {}
        self._compacted = set()
        self._listener = None
        self._listening = set()  # topic ids whose channels the listener LISTENs on
        self._waiter = wakeups.Waiter(wakeups.APPENDS, f"member {self.member_id} of {group}")
        self._keys = frozenset()  # the wake-up keys of the assigned partitions
        self._heartbeat_thread = None
        self._stop_heartbeat = threading.Event()
        self._resync = threading.Event()
        self._rewind = False
        self._last_commit = time.monotonic()
        self.heartbeat_error = None
        self.closed = False

    # Membership ---------------------------------------------------------------------------

    def _join(self):
        self.assignment = groups.join(
            self.group,
            self.topics,
            member_id=self.member_id,
            client_id=self.client_id,
            host=f"{socket.gethostname()}/{os.getpid()}",
            session_timeout_ms=self.session_timeout_ms,
        )
        self._adopt(self.assignment)
        if self._heartbeat_thread is None:
            self._heartbeat_thread = threading.Thread(
                target=self._heartbeat_loop, name=f"heartbeat-{self.member_id}", daemon=True
            )
            self._heartbeat_thread.start()

    def _sync(self):
        self._resync.clear()
        self._flush_pending()
        try:
            assignment = groups.sync(self.assignment.group_id, self.member_id)
        except exceptions.UnknownMember:
            logger.info("member %s was removed from %s; joining again", self.member_id, self.group)
            self._join()
            return
        if assignment.generation != self.assignment.generation or self._rewind:
            self._adopt(assignment)
        self.assignment = assignment
        self._rewind = False

    def _adopt(self, assignment):
        """Take a new generation's partitions, starting each at its committed offset."""
        slots = {(t, p) for t, _, p in assignment.partitions}
        self._names = {t: name for t, name, _ in assignment.partitions}
        committed = groups.committed_offsets(assignment.group_id, slots)
        self._positions = {}
        for slot in slots:
            self._positions[slot] = committed.get(slot)
        self._consumed = {}
        self._fix_positions()
        self.assignment = assignment
        self._keys = wakeups.partition_keys(slots)
        self._ensure_listener()
        self._waiter.stop(self._listener)  # the ask named the old partitions
        logger.info(
            "member %s of %s: generation %d, partitions %s",
            self.member_id, self.group, assignment.generation,
            ", ".join(f"{n}-{p}" for _, n, p in assignment.partitions) or "none",
            extra={"group": self.group, "generation": assignment.generation},
        )

    def _fix_positions(self):
        """Apply the reset policy to partitions with no position or one outside the log."""
        bounds = groups.log_bounds(set(self._positions))
        # Read again each time, so a topic altered to compact has its gaps accepted from here on.
        self._compacted = set(models.Topic.objects.filter(
            id__in={t for t, _ in self._positions}, cleanup_policy=models.Topic.CleanupPolicy.COMPACT,
        ).values_list("id", flat=True))
        for slot, position in self._positions.items():
            start, end = bounds.get(slot, (0, 0))
            if position is None or position < start or position > end:
                self._positions[slot] = start if self.auto_offset_reset == types.OffsetReset.EARLIEST else end

    def _heartbeat_loop(self):
        try:
            while not self._stop_heartbeat.wait(self.heartbeat_interval):
                try:
                    generation = groups.heartbeat(self.assignment.group_id, self.member_id)
                    if generation != self.assignment.generation:
                        self._resync.set()
                except exceptions.UnknownMember:
                    self._resync.set()
                except (OperationalError, InterfaceError) as error:
                    logger.warning("heartbeat of %s failed: %s", self.member_id, error)
                    connection.close()
        except BaseException as error:  # noqa: BLE001 - a dead heartbeat thread must stop the consumer
            self.heartbeat_error = error
            logger.exception("heartbeat thread of %s died", self.member_id)
        finally:
            connection.close()

    # Reading ------------------------------------------------------------------------------

    def poll(self, timeout=1.0, max_records=None):
        """Return the next records of the assigned partitions, waiting up to timeout seconds.

        Records of one partition come in offset order with no gaps; positions advance past what
        is returned. With auto commit, positions handed out by earlier polls are committed here.
        """
        if self.closed:
            raise exceptions.InvalidArgument(reason="the consumer is closed")
        if self.heartbeat_error is not None:
            raise self.heartbeat_error
        deadline = time.monotonic() + max(0.0, timeout)
        if self.assignment is None:
            self._join()
        while True:
            if self._resync.is_set() or self._rewind:
                self._sync()
            if self.enable_auto_commit and time.monotonic() - self._last_commit >= self.auto_commit_interval:
                self._auto_commit()
            self._waiter.drain(self._wait)
            records = self._fetch(max_records or self.max_poll_records)
            self._waiter.found(self._listener, len(records))
            if records:
                return records
            if self._resync.is_set():
                continue  # fenced: re-sync now rather than after a wait
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            self._waiter.sleep(self._listener, self._keys, min(remaining, self.fallback_interval), self._wait)

    @property
    def late_wakeups(self):
        """Waits that ended without a NOTIFY while records were committed for this member."""
        return self._waiter.late_wakeups

    def _fetch(self, limit):
        if not self._positions:
            return []
        per_partition = max(1, limit // len(self._positions))
        commit, self._pending = self._pending, {}
        try:
            stored, rows = storage.commit_and_fetch(
                positions=self._positions, per_partition=per_partition, commit=self._commit_request(commit),
            )
        except BaseException:
            self._pending = {**commit, **self._pending}  # not stored: it goes with the next fetch
            raise
        if commit:
            self._committed(commit, stored)
            if not stored:
                # This generation is over: its records are another member's now.
                logger.info("offset commit of %s refused: %s moved past generation %d; re-syncing",
                            self.member_id, self.group, self.assignment.generation)
                return []
        records, moved = [], False
        for slot, run in _runs(rows):
            moved = self._take(slot, run, records) or moved
        if moved:
            self._fix_positions()
        return records

    def _take(self, slot, rows, records):
        """Hand out one partition's rows (offset order) after its position; return True if the log
        start moved past the position (the reset policy then decides where to go)."""
        expected, name, partition, make = self._positions[slot], self._names[slot[0]], slot[1], types.Record
        if rows[0][2] == expected and rows[-1][2] == expected + len(rows) - 1:
            # Dense from the position, the usual case: one pass, no per-row checks.
            # tuple.__new__ skips Record.__new__'s Python frame (fields in order, delivery_count 0).
            new = tuple.__new__
            records.extend([new(make, (name, partition, r[2], r[3], r[4], r[5], r[6] or {}, r[7], 0)) for r in rows])
            self._positions[slot] = self._consumed[slot] = rows[-1][2] + 1
            return False
        started = False
        for row in rows:
            offset = row[2]
            if offset != expected:
                if not (offset > expected and slot[0] in self._compacted
                        and (started or not self._behind_log_start(slot))):
                    # A range read of a dense log starts at the position (or the log start, if
                    # later); a later first offset means the log start moved past us (retention).
                    # This partition's other rows wait for the reset.
                    return offset > expected
                # Otherwise compaction removed the records in between: a normal gap.
            started = True
            expected = offset + 1
            self._positions[slot] = self._consumed[slot] = expected
            records.append(make(name, partition, offset, row[3], row[4], row[5], row[6] or {}, row[7]))
        return False

    def _behind_log_start(self, slot):
        """Whether a partition's position is below its log start (retention moved past it)."""
        start, _ = groups.log_bounds({slot}).get(slot, (0, 0))
        return self._positions[slot] < start

    def _ensure_listener(self):
        topic_ids = {t for t, _ in self._positions}
        if self._listener is not None and not self._listener.closed:
            if topic_ids <= self._listening:
                return
            self._listener.close()  # partitions of another topic now: listen on its channel too
        try:
            channels = [f"sluice_t{t}" for t in topic_ids] + [f"sluice_g{self.assignment.group_id}"]
            self._listener = wakeups.listen_connection(channels)
            self._listening = topic_ids
        except psycopg.Error as error:
            # Without notifications the consumer still polls at the fallback interval.
            logger.warning("LISTEN connection failed (%s); polling every %.1fs", error, self.fallback_interval)
            self._listener = None

    def _wait(self, seconds):
        """Wait for a NOTIFY up to seconds (0: take those already here); return whether one came for
        this member: an append to one of its partitions, or a group notice (which asks for a
        re-sync). Appends to the topic's other partitions, which other members wait for, are passed
        over: every member of the group LISTENs on the topic's channel."""
        if self._listener is None or self._listener.closed:
            self._ensure_listener()
            if self._listener is None:
                time.sleep(seconds)
                return False
        deadline = time.monotonic() + seconds
        try:
            while True:
                # Taken whole (list), so that the generator lets go of the connection's lock.
                notices = list(self._listener.notifies(timeout=max(0.0, deadline - time.monotonic()),
                                                       stop_after=1 if seconds else None))
                if any([self._concerns(n) for n in notices]):  # each looked at: group notices count
                    return True
                if not notices or time.monotonic() >= deadline:
                    return False
        except psycopg.Error as error:
            logger.warning("LISTEN connection lost (%s); reconnecting", error)
            self._listener.close()
            self._listener = None
        return False

    def _concerns(self, notice):
        if notice.channel.startswith("sluice_g"):
            self._resync.set()
            return True
        try:
            return (int(notice.channel[len("sluice_t"):]), int(notice.payload)) in self._positions
        except ValueError:
            return True

    def rewind(self):
        """Go back to the committed offsets at the next poll (after a lost connection, say)."""
        self._rewind = True

    def seek(self, topic_partition, offset):
        """Move the position of an assigned partition: the next poll reads from offset."""
        for slot, name in ((s, self._names.get(s[0])) for s in self._positions):
            if name == topic_partition.topic and slot[1] == topic_partition.partition:
                self._positions[slot] = offset
                self._fix_positions()
                return
        raise exceptions.InvalidArgument(reason=f"{topic_partition} is not assigned to this consumer")

    def assigned(self):
        """The TopicPartitions this member owns in its generation."""
        return sorted(types.TopicPartition(topic=self._names[t], partition=p) for t, p in self._positions)

    def positions(self):
        return {types.TopicPartition(topic=self._names[t], partition=p): o for (t, p), o in self._positions.items()}

    # Committing ---------------------------------------------------------------------------

    def commit(self, offsets=None):
        """Store offsets ({TopicPartition: next offset}; default: everything polled so far), and
        any left by commit_async(); return once they are stored.

        Raises CommitFailed, storing nothing, if the group rebalanced or was reset since this
        member's generation began; the consumer then re-syncs at its next poll.
        """
        if self.assignment is None:
            return
        explicit = self._slots(offsets)
        pending, self._pending = self._pending, {}
        slots = {**pending, **explicit}
        if not slots:
            return
        try:
            accepted = storage.commit_offsets(**self._commit_request(slots))
        except BaseException:
            self._pending = {**pending, **self._pending}  # not stored (a lost connection, say): kept
            raise
        self._committed(slots, accepted)
        if not accepted:
            raise exceptions.CommitFailed(group=self.group, generation=self.assignment.generation)

    def commit_async(self, offsets=None):
        """Have offsets (as for commit()) stored with the next poll's fetch, in the same round trip
        (Kafka's commitAsync). A refused commit is logged and the consumer re-syncs; offsets still
        waiting are stored by commit(), before a re-sync, and by close()."""
        if self.assignment is not None:
            self._pending.update(self._slots(offsets))

    def _slots(self, offsets):
        """{(topic_id, partition): offset} for offsets {TopicPartition: offset}; None: all consumed."""
        if offsets is None:
            return dict(self._consumed)
        by_name = {(self._names.get(t), p): (t, p) for t, p in self._positions}
        slots = {}
        for tp, offset in offsets.items():
            slot = by_name.get((tp.topic, tp.partition))
            if slot is None:
                raise exceptions.CommitFailed(group=self.group, generation=self.assignment.generation)
            slots[slot] = offset
        return slots

    def _commit_request(self, slots):
        if not slots:
            return None
        return {"group_id": self.assignment.group_id, "member_id": self.member_id,
                "generation": self.assignment.generation, "offsets": slots}

    def _committed(self, slots, accepted):
        self._last_commit = time.monotonic()
        if not accepted:
            self._resync.set()
            return
        for slot, offset in slots.items():
            if self._consumed.get(slot) == offset:
                del self._consumed[slot]

    def _flush_pending(self):
        """Store what commit_async() left, before the assignment changes or the consumer closes."""
        if self._pending:
            try:
                self.commit({})
            except exceptions.CommitFailed as error:
                logger.info("pending offset commit refused: %s", error)

    def _auto_commit(self):
        """Store everything polled so far with the next fetch."""
        self._last_commit = time.monotonic()
        self._pending.update(self._consumed)

    def close(self, *, commit=None):
        """Commit (with auto commit, unless commit=False), leave the group and close connections."""
        if self.closed:
            return
        self.closed = True
        self._stop_heartbeat.set()
        try:
            if self.assignment is not None:
                if commit if commit is not None else self.enable_auto_commit:
                    self._pending.update(self._consumed)
                self._flush_pending()
                groups.leave(self.assignment.group_id, self.member_id)
        finally:
            if self._heartbeat_thread is not None:
                self._heartbeat_thread.join(timeout=5)
            if self._listener is not None:
                self._listener.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
