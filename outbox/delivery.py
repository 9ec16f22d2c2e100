"""Deliver a claimed batch of outbox events to their destinations, in order per aggregate.

Runs inside the relay's batch transaction. To a Sluice topic an event is appended in that
transaction, so the record and the mark "delivered" commit together: exactly once. To an external
broker it is published and confirmed first, then marked in the transaction: if the transaction is
lost after the confirm, the event is published again (at least once; deduplicate with the inbox).
"""
import collections
import dataclasses
import logging
import random

from django.db import InterfaceError, OperationalError, transaction

from outbox import destinations, exceptions, outbox
from outbox.storage import events as storage
from queueing import partitioner, producer, topics, types

logger = logging.getLogger("sluice.relay")
CONNECTION_ERRORS = (OperationalError, InterfaceError)


@dataclasses.dataclass
class Result:
    """What became of a batch: seqs delivered, [(event, error, delay_ms)] failed, and
    [(event, error, delay_ms)] deferred because their broker was unavailable."""

    delivered: list = dataclasses.field(default_factory=list)
    failed: list = dataclasses.field(default_factory=list)
    deferred: list = dataclasses.field(default_factory=list)


def backoff_ms(attempts, base_ms, max_ms):
    """Exponential back-off after the attempts-th failure, with ±20% jitter so relays spread out."""
    delay = min(max_ms, base_ms * 2 ** min(attempts - 1, 30))
    return int(delay * random.uniform(0.8, 1.2))


def deliver(events, publisher, *, backoff=(500, 60_000), careful=False):
    """Deliver claimed events (caller's transaction), mark those delivered, and return a Result;
    failures are the caller's to record.

    Each aggregate's events are tried in seq order and its run stops at the first that fails, so
    nothing is delivered while an earlier event of its aggregate is not. A failure never stops
    other aggregates. The events to Sluice topics go in with their mark in one statement, without
    a savepoint (each costs two round trips): if that fails, BatchAppendFailed says the transaction
    must be rolled back and the batch delivered again with careful=True, which appends partition
    by partition, then event by event, each in a savepoint, so that only what fails stays behind.
    """
    result = Result()
    blocked = set()  # aggregates whose run stopped in this batch
    sluice, external = [], []
    for event, destination in _runs(events, result, blocked, backoff):
        (sluice if destination.kind == destinations.SLUICE else external).append((event, destination))
    plan = _plan(sluice, result, blocked, backoff)
    if careful:
        _to_sluice(plan, result, blocked, backoff)
        marked = 0
    else:
        _to_sluice_at_once(plan, result)  # marks them too
        marked = len(result.delivered)
    _to_brokers(external, publisher, result, blocked, backoff)
    storage.mark_delivered(seqs=result.delivered[marked:])
    return result


def _runs(events, result, blocked, backoff):
    """Yield (event, Destination) of each aggregate's deliverable run: it ends before an event that
    is still backing off, and before a change of destination (one batch sends an aggregate's events
    to one place, so a failure there cannot leave a later event delivered elsewhere)."""
    first, cut = {}, set()  # cut: aggregates whose run ended (not failed: their events just wait)
    for event in events:
        aggregate = event.aggregate
        if aggregate in blocked or aggregate in cut:
            continue
        if not event.due:
            cut.add(aggregate)
            continue
        try:
            destination = destinations.resolve(event.destination)
        except exceptions.InvalidDestination as error:
            _fail(result, blocked, event, error, backoff)
            continue
        if first.setdefault(aggregate, destination) != destination:
            cut.add(aggregate)
            continue
        yield event, destination


def _fail(result, blocked, event, error, backoff):
    blocked.add(event.aggregate)
    result.failed.append((event, _describe(error), backoff_ms(event.attempts + 1, *backoff)))


def _describe(error):
    return f"{type(error).__name__}: {error}"


def _plan(pairs, result, blocked, backoff):
    """[(TopicInfo, partition, events)] for the (event, Destination) pairs to Sluice topics, in
    (topic id, partition) order; the events of a topic that cannot be found fail."""
    groups = {}
    for event, destination in pairs:
        groups.setdefault(destination.topic, []).append(event)
    plan = []  # (TopicInfo, partition, events)
    # Partitions in (topic id, partition) order, the order in which one statement locks them: an
    # append holds its partition's lock until commit, so the careful appends one by one (after a
    # failure) take the locks in the same order as other relays and never deadlock with them.
    for topic, events in groups.items():
        try:
            info = topics.cached_topic(topic)
        except CONNECTION_ERRORS:
            raise
        except Exception as error:  # noqa: BLE001 - a missing topic fails its events, not the batch
            for event in events:
                if event.aggregate not in blocked:
                    _fail(result, blocked, event, error, backoff)
            continue
        by_partition = {}
        for event in events:
            key = (event.key or event.aggregate_id).encode()
            by_partition.setdefault(partitioner.partition_for_key(key, info.partition_count), []).append(event)
        plan.extend((info, partition, batch) for partition, batch in by_partition.items())
    plan.sort(key=lambda item: (item[0].id, item[1]))
    return plan


def _to_sluice_at_once(plan, result):
    """Append the plan's events and mark them delivered, in one statement."""
    seqs = [event.seq for _, _, events in plan for event in events]
    if not seqs:
        return
    try:
        producer.append_partitions([(info, partition, [_record(event) for event in events])
                                    for info, partition, events in plan],
                                   also=storage.mark_delivered_along(seqs=seqs))
    except CONNECTION_ERRORS:
        raise
    except Exception as error:  # noqa: BLE001 - the batch is delivered again, carefully
        raise exceptions.BatchAppendFailed(reason=_describe(error)) from error
    result.delivered.extend(seqs)


def _to_sluice(plan, result, blocked, backoff):
    """Append the plan's events in one statement, in one savepoint; if that fails, partition by
    partition and then event by event, so only the events that fail (and their aggregates' later
    events) stay behind."""
    if len(plan) > 1 and _append(plan):
        result.delivered.extend(event.seq for _, _, batch in plan for event in batch)
        return
    for info, partition, batch in plan:
        if not _append([(info, partition, batch)]):
            for event in batch:
                if event.aggregate not in blocked:
                    try:
                        _append([(info, partition, [event])], raise_error=True)
                    except CONNECTION_ERRORS:
                        raise
                    except Exception as error:  # noqa: BLE001 - recorded on the event, retried later
                        _fail(result, blocked, event, error, backoff)
                        continue
                    result.delivered.append(event.seq)
            continue
        result.delivered.extend(event.seq for event in batch)


def _append(plan, *, raise_error=False):
    """Append the events of each (TopicInfo, partition, events) of plan in one statement, in one
    savepoint; False (or the error) if one failed, and then none is appended."""
    try:
        with transaction.atomic():
            producer.append_partitions(
                [(info, partition, [_record(event) for event in events]) for info, partition, events in plan])
    except CONNECTION_ERRORS:
        raise
    except Exception:
        if raise_error:
            raise
        logger.info("append of %d event(s) to %s failed; retrying them in parts",
                    sum(len(events) for _, _, events in plan),
                    ", ".join(f"{info.name}-{partition}" for info, partition, _ in plan))
        return False
    return True


def _record(event):
    envelope, headers = _message(event)
    value, value_format = producer.encode_value(envelope)
    return types.OutgoingRecord((event.key or event.aggregate_id).encode(), value, value_format, headers)


def _message(event):
    """The CloudEvents envelope, and headers: the event's own plus the envelope's id, type, source and
    subject as `ce_` headers (so consumers can route and deduplicate without parsing the value)."""
    envelope = outbox.cloudevent(event.id, event.aggregate_type, event.aggregate_id, event.event_type,
                                 event.payload, event.created_at)
    headers = {**(event.headers or {})}
    for name in ("id", "type", "source", "subject"):
        headers[f"ce_{name}"] = envelope[name]
    return envelope, headers


def _to_brokers(pairs, publisher, result, blocked, backoff):
    """Publish in rounds. A round takes the next event of every aggregate still going, so each
    aggregate has one event in flight and a refused one never leaves a later event of its aggregate
    delivered before it; each broker gets its share of the round as one window and confirms it at
    once. When a broker is unavailable, its other events wait as long as the failed one."""
    queues = {}  # aggregate -> its events, in seq order
    for event, destination in pairs:
        queues.setdefault(event.aggregate, collections.deque()).append((event, destination))
    down = {}  # broker URL -> (error, delay_ms)
    while queues:
        by_broker = {}
        for aggregate in list(queues):
            run = queues[aggregate]
            if aggregate not in blocked:
                by_broker.setdefault(run[0][1].url, []).append(run.popleft())
            if aggregate in blocked or not run:
                del queues[aggregate]
        for url, items in by_broker.items():
            _publish_window(url, items, publisher, result, blocked, backoff, down)


def _publish_window(url, items, publisher, result, blocked, backoff, down):
    if url in down:
        for event, _ in items:
            blocked.add(event.aggregate)
            result.deferred.append((event, *down[url]))
        return
    messages = [(destination, *_message(event)) for event, destination in items]
    try:
        errors = publisher.publish_many(messages)
    except exceptions.BrokerUnavailable as error:
        # The first event is the probe that failed; the others wait with it, untried.
        _fail(result, blocked, items[0][0], error, backoff)
        down[url] = result.failed[-1][1:]
        _publish_window(url, items[1:], publisher, result, blocked, backoff, down)
        return
    except Exception as error:  # noqa: BLE001 - recorded on the events, retried later
        errors = [error] * len(items)
    for (event, _), error in zip(items, errors):
        if error is None:
            result.delivered.append(event.seq)
        else:
            _fail(result, blocked, event, error, backoff)
