"""Producers: encode records, pick partitions, and append them to the log."""
import contextlib
import json
import logging
import threading
import time

from django.db import InterfaceError, OperationalError, connection, transaction

from queueing import exceptions, models, partitioner, storage, topics, types

_MAX_HEADERS_BYTES = 64 * 1024
_RETRIES = 5
logger = logging.getLogger("sluice.producer")


def encode_key(key):
    if key is None or isinstance(key, bytes):
        return key
    if isinstance(key, str):
        return key.encode("utf-8")
    if isinstance(key, (int, bytearray, memoryview)) and not isinstance(key, bool):
        return str(key).encode() if isinstance(key, int) else bytes(key)
    raise exceptions.InvalidArgument(reason=f"a key must be bytes, str or int, not {type(key).__name__}")


def encode_value(value):
    """Return (bytes, ValueFormat): bytes stay bytes, anything else is stored as JSON."""
    if value is None:
        return None, types.ValueFormat.BYTES
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value), types.ValueFormat.BYTES
    try:
        return json.dumps(value, separators=(",", ":")).encode("utf-8"), types.ValueFormat.JSON
    except (TypeError, ValueError) as error:
        raise exceptions.InvalidArgument(reason=f"the value is neither bytes nor JSON-serialisable: {error}") from None


def encode_headers(headers):
    if not headers:
        return None
    if not isinstance(headers, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
        raise exceptions.InvalidArgument(reason="headers must be a dict of str to str")
    if sum(len(k) + len(v) for k, v in headers.items()) > _MAX_HEADERS_BYTES:
        raise exceptions.InvalidArgument(reason=f"headers are larger than {_MAX_HEADERS_BYTES} bytes")
    return headers


class Producer:
    """Sends records to topics.

    With idempotent=True the producer registers an id and numbers its batches per partition, so a
    send retried after a lost reply (same producer, same sequence) is stored once; call
    `retry_last(...)` or resend through `send_batch(..., base_sequence=...)` to retry. A send inside
    the caller's `transaction.atomic()` commits or rolls back with it.
    """

    def __init__(self, *, idempotent=False, acks=types.Acks.ALL, client_id=""):
        self.acks = types.Acks(acks)
        self.client_id = client_id
        self.idempotent = idempotent
        self.producer_id = None
        self._sequences = {}  # (topic_id, partition) -> next sequence
        self._sticky = partitioner.StickyPartitioner()
        self._lock = threading.Lock()

    def _register(self):
        if self.producer_id is None:
            self.producer_id = models.Producer.objects.create(client_id=self.client_id).id

    def send(self, topic, value=None, *, key=None, headers=None, partition=None, acks=None,
             delay=None, deliver_at=None, delay_level=None):
        """Append one record and return its RecordMetadata (DelayedMetadata when delayed)."""
        if delay is not None or deliver_at is not None or delay_level is not None:
            return self.send_batch(topic, [value], key=key, headers=headers, partition=partition, acks=acks,
                                   delay=delay, deliver_at=deliver_at, delay_level=delay_level)[0]
        # The path of send_batch for one record, without its lists: a single send is short enough for
        # them to show.
        try:
            return self._send_one(topics.cached_topic(topic), value, key, headers, partition, acks)
        except exceptions.PartitionNotFound:
            topics.forget_topic(topic)  # as in send_batch
            return self._send_one(topics.cached_topic(topic), value, key, headers, partition, acks)

    def _send_one(self, info, value, key, headers, partition, acks):
        if partition is not None:
            self._choose(info, partition, None, 0)
        target, record = self._encode(info, value, encode_key(key), encode_headers(headers), partition)
        self._sticky.new_batch(info.name)
        base, duplicate = self._append(info, target, [record], acks)
        return types.RecordMetadata(info.name, target, base, duplicate)

    def send_batch(self, topic, values, *, key=None, keys=None, headers=None, partition=None, acks=None,
                   delay=None, deliver_at=None, delay_level=None):
        """Append records in order; records for one partition are appended in one statement.

        keys, if given, has one key per value; otherwise every record gets key. Returns a
        RecordMetadata per value, in the order given. With delay (seconds or a timedelta),
        deliver_at (an aware datetime) or delay_level (RocketMQ's 1-18) the records wait and enter
        the log when due; a DelayedMetadata per value is returned instead. Raises TopicNotFound,
        MessageTooLarge, InvalidArgument, PartitionNotFound.
        """
        when = {"delay": delay, "deliver_at": deliver_at, "delay_level": delay_level}
        due = None
        if any(v is not None for v in when.values()):
            from queueing import delayed

            due = delayed.deliver_at_for(**when)
        try:
            return self._send_batch(topics.cached_topic(topic), values, key, keys, headers, partition, acks, due)
        except exceptions.PartitionNotFound:
            # The cached topic was deleted (or recreated under a new id) since it was read.
            topics.forget_topic(topic)
            return self._send_batch(topics.cached_topic(topic), values, key, keys, headers, partition, acks, due)

    def _send_batch(self, info, values, key, keys, headers, partition, acks, due=None):
        topic = info.name
        values = list(values)
        if not values:
            return []
        if keys is not None and len(keys) != len(values):
            raise exceptions.InvalidArgument(reason="keys and values must have the same length")
        encoded_headers = encode_headers(headers)
        if partition is not None:
            self._choose(info, partition, None, 0)  # validates the partition once for the batch
        by_partition, encode = {}, self._encode
        fixed_key = encode_key(key) if keys is None else None
        for index, value in enumerate(values):
            record_key = fixed_key if keys is None else encode_key(keys[index])
            target, record = encode(info, value, record_key, encoded_headers, partition)
            by_partition.setdefault(target, []).append((index, record))
        self._sticky.new_batch(topic)
        if due is not None:
            return self._schedule(info, by_partition, partition, len(values), due)
        results = [None] * len(values)
        metadata = types.RecordMetadata
        for target, batch in by_partition.items():
            base, duplicate = self._append(info, target, [r for _, r in batch], acks)
            for position, (index, _) in enumerate(batch):
                results[index] = metadata(topic, target, base + position, duplicate)
        return results

    def _encode(self, info, value, key, headers, partition):
        """Return (partition, OutgoingRecord) for one value with its encoded key and headers, checked
        against the topic's limits; partition None picks one by key, or the sticky one."""
        if type(value) is bytes:  # the common case, without a call
            data, value_format = value, types.ValueFormat.BYTES
        else:
            data, value_format = encode_value(value)
        size = (len(data) if data else 0) + (len(key) if key else 0)
        if size > info.max_message_bytes:
            raise exceptions.MessageTooLarge(topic=info.name, size=size, limit=info.max_message_bytes)
        if key is None and info.cleanup_policy == "compact":
            raise exceptions.InvalidArgument(reason=f"topic {info.name!r} is compacted: every record needs a key")
        target = partition if partition is not None else self._choose(info, None, key, size)
        return target, types.OutgoingRecord(key, data, value_format, headers)

    def _schedule(self, info, by_partition, partition, count, due):
        """Store delayed records; a keyed record's partition is chosen by its key when it is due."""
        from queueing import delayed

        results = [None] * count
        # One record is one statement, atomic without a transaction of its own (two round trips).
        with transaction.atomic() if count > 1 else contextlib.nullcontext():
            for target, batch in by_partition.items():
                for index, record in batch:
                    keep = target if partition is not None or record.key is None else None
                    results[index] = delayed.schedule(info, record, partition=keep, deliver_at=due)
        return results

    def send_selected(self, ctes, batches, topic, *, max_bytes):
        """Run the caller's CTEs and append the records (at most max_bytes each) that their CTE
        named source makes to one partition of topic, one statement per batch of parameters (see
        storage.append_selected): rows written and their records in one round trip, and batches
        pipelined, made one at a time while the database runs the last.

        batches is an iterable of parameter dicts, read one at a time. All of them go in one
        transaction: the caller's, or, in autocommit, one of their own. acks=all, not idempotent;
        the records go to the sticky partition, as one batch. Returns, per batch, (partition, base
        offset or None, the records' timestamp, records appended): none when the caller's writes
        gave source no row. Raises TopicNotFound, MessageTooLarge, PartitionNotFound (the partition
        was deleted while a statement ran: the caller's writes may stand).
        """
        made = []  # the batches' parameters, kept for a second try
        batches = iter(batches)

        def parameters():
            yield from made
            for params in batches:
                made.append(params)
                yield params

        for _ in range(2):
            info = topics.cached_topic(topic)
            if max_bytes > info.max_message_bytes:
                raise exceptions.MessageTooLarge(topic=info.name, size=max_bytes, limit=info.max_message_bytes)
            target = self._sticky.partition(info.name, info.partition_count, max_bytes)
            self._sticky.new_batch(info.name)
            results = storage.append_selected(ctes, parameters(), topic_id=info.id, partition=target)
            if all(found for *_, found in results):
                if any(appended and base is None for base, _, appended, _ in results):
                    raise exceptions.PartitionNotFound(topic=info.name, partition=target)
                return [(target, base, timestamp, appended) for base, timestamp, appended, _ in results]
            # The cached topic was deleted or recreated since it was read: the caller's writes,
            # gated on the partition, wrote nothing (the statements that found it would have
            # found it all); once more with the topic as it is now.
            if any(found for *_, found in results):
                raise exceptions.PartitionNotFound(topic=info.name, partition=target)
            topics.forget_topic(topic)
        raise exceptions.PartitionNotFound(topic=info.name, partition=target)

    def send_one_selected(self, ctes, params, topic, *, value, value_format):
        """Run the caller's CTEs and append one record of value (bytes) to topic in one statement
        (storage.append_one_selected: the CTEs may read slot and gate their writes on it), to the
        sticky partition, in the caller's transaction or, in autocommit, one of its own. acks=all,
        not idempotent. Returns (partition, offset, the record's timestamp). Raises TopicNotFound,
        MessageTooLarge, PartitionNotFound."""
        for _ in range(2):
            info = topics.cached_topic(topic)
            if len(value) > info.max_message_bytes:
                raise exceptions.MessageTooLarge(topic=info.name, size=len(value), limit=info.max_message_bytes)
            target = self._sticky.partition(info.name, info.partition_count, len(value))
            self._sticky.new_batch(info.name)
            appended = storage.append_one_selected(ctes, params, topic_id=info.id, partition=target,
                                                   value=value, value_format=value_format)
            if appended is not None:
                return (target, *appended)
            # The cached topic was deleted or recreated since it was read, and the caller's writes,
            # gated on the partition, wrote nothing; once more with the topic as it is now.
            topics.forget_topic(topic)
        raise exceptions.PartitionNotFound(topic=info.name, partition=target)

    def append(self, topic, partition, records, *, acks=None):
        """Append already-encoded OutgoingRecords, each with its own headers, to one partition.

        For copies (replay, dead letters) that must keep a value's format and carry per-record
        headers; idempotence works as for send_batch. Returns the base offset.
        """
        info = _checked(topic, partition, records)
        base, _ = self._append(info, partition, list(records), acks)
        return base

    def _choose(self, info, partition, key, size):
        if partition is not None:
            if not isinstance(partition, int) or not 0 <= partition < info.partition_count:
                raise exceptions.PartitionNotFound(topic=info.name, partition=partition)
            return partition
        if key is not None:
            return partitioner.partition_for_key(key, info.partition_count)
        return self._sticky.partition(info.name, info.partition_count, size)

    def _append(self, info, partition, records, acks):
        acks = types.Acks(acks or self.acks)
        if not self.idempotent:
            return self._store(info, partition, records, acks, None, None)
        with self._lock:
            self._register()
            slot = (info.id, partition)
            sequence = self._sequences.get(slot, 0)
            try:
                result = self._store_retrying(info, partition, records, acks, sequence)
            except BaseException:
                # Whether the batch was stored is unknown; a new producer id keeps a later, different
                # batch from being mistaken for a retry of this one.
                self.producer_id = None
                self._sequences.clear()
                raise
            self._sequences[slot] = sequence + len(records)
        return result

    def _store_retrying(self, info, partition, records, acks, sequence):
        """Store a batch, resending it with the same sequence if the connection drops.

        Only outside the caller's transaction: inside one, the caller's transaction is lost with the
        connection and it is the caller who must retry.
        """
        for attempt in range(_RETRIES + 1):
            try:
                return self._store(info, partition, records, acks, self.producer_id, sequence)
            except (OperationalError, InterfaceError) as error:
                if connection.in_atomic_block or attempt == _RETRIES:
                    raise
                logger.warning(
                    "send to %s-%s failed (%s); retrying with the same sequence",
                    info.name, partition, error, extra={"producer_id": self.producer_id, "attempt": attempt + 1},
                )
                connection.close()
                time.sleep(min(0.05 * 2**attempt, 1.0))

    def _store(self, info, partition, records, acks, producer_id, base_sequence):
        return storage.append_records(
            topic_id=info.id,
            partition=partition,
            records=records,
            producer_id=producer_id,
            base_sequence=base_sequence,
            acks=acks,
        )


def _checked(topic, partition, records):
    """Return the TopicInfo of topic (a name or a TopicInfo), once partition and records fit it."""
    info = topic if isinstance(topic, types.TopicInfo) else topics.cached_topic(topic)
    if not isinstance(partition, int) or not 0 <= partition < info.partition_count:
        raise exceptions.PartitionNotFound(topic=info.name, partition=partition)
    for record in records:
        size = len(record.value or b"") + len(record.key or b"")
        if size > info.max_message_bytes:
            raise exceptions.MessageTooLarge(topic=info.name, size=size, limit=info.max_message_bytes)
    return info


def append_partitions(batches, *, also=None):
    """Append already-encoded OutgoingRecords to several partitions in one statement, as
    Producer.append does to one: batches is [(topic, partition, records)], each partition once;
    also, a query of the caller's to run in the same statement (see storage.append_partitions).

    Call it in a transaction: it is all or nothing with it, and commits as acks=all does. Raises
    MessageTooLarge, and PartitionNotFound for a partition past the topic's count, before anything
    is written (for a partition row that is missing, see storage.append_partitions).
    """
    plan = {}
    for topic, partition, records in batches:
        plan[(_checked(topic, partition, records).id, partition)] = list(records)
    storage.append_partitions(plan, also=also)


_default = Producer()


def send(topic, value=None, *, key=None, headers=None, partition=None, acks=types.Acks.ALL, **when):
    """Append one record with the process's default (non-idempotent) producer; delay=,
    deliver_at= or delay_level= make it wait (see Producer.send_batch)."""
    return _default.send(topic, value, key=key, headers=headers, partition=partition, acks=acks, **when)


def send_batch(topic, values, *, key=None, keys=None, headers=None, partition=None, acks=types.Acks.ALL, **when):
    """Append records with the process's default producer; see Producer.send_batch."""
    return _default.send_batch(topic, values, key=key, keys=keys, headers=headers, partition=partition, acks=acks,
                               **when)


def send_one_selected(ctes, params, topic, *, value, value_format):
    """Append one record with the caller's statements, with the default producer; see Producer.send_one_selected."""
    return _default.send_one_selected(ctes, params, topic, value=value, value_format=value_format)


def send_selected(ctes, batches, topic, *, max_bytes):
    """Append the records of the caller's statements with the default producer; see Producer.send_selected."""
    return _default.send_selected(ctes, batches, topic, max_bytes=max_bytes)

