"""Redrive: a dead letter sent back to its topic reaches the group that failed it, not the others."""
import pytest

from queueing import exceptions, models, producer, registry, replay, topics, types, worker


@pytest.fixture(autouse=True)
def fast(settings):
    settings.SLUICE = {**settings.SLUICE, "POLL_FALLBACK_MS": 50, "HEARTBEAT_INTERVAL_MS": 60_000,
                       "BACKOFF_BASE_MS": 1, "BACKOFF_MAX_MS": 2}


class Handler:
    """Records what it handled; fails on values in `broken` until they are fixed."""

    def __init__(self, broken=()):
        self.seen, self.broken = [], set(broken)

    def __call__(self, record):
        if record.value in self.broken:
            raise ValueError(f"cannot handle {record.value!r}")
        self.seen.append(record.value)


def drain(group, topic, handler, *, share=False):
    """Run group's worker over topic until it has nothing left to read."""
    registry.handler(topic, group=group, mode="share" if share else "ordered")(handler)
    kind = worker.ShareWorker if share else worker.Worker
    loop = kind(group, registry.subscriptions(group), poll_timeout=0.1)
    try:
        idle = 0
        for _ in range(60):
            idle = 0 if loop.run_once() else idle + 1
            if idle == 2:
                break
    finally:
        loop.stop()
        loop.close()
        registry.unregister(group)


def lag(group, topic):
    info = topics.get_topic(topic)
    ends = dict(models.Partition.objects.filter(topic_id=info.id).values_list("number", "next_offset"))
    committed = models.CommittedOffset.objects.filter(group__name=group, topic_id=info.id)
    return sum(ends[c.partition] - c.offset for c in committed)


@pytest.fixture
def failed(db):
    """orders read by billing (which fails on b"bad") and by audit (which handles everything)."""
    topics.create_topic("orders", partitions=2)
    models.ConsumerGroup.objects.create(name="billing", delivery_limit=2)
    producer.send_batch("orders", [b"ok-1", b"bad", b"ok-2"], key="cust-1")
    billing, audit = Handler(broken={b"bad"}), Handler()
    drain("billing", "orders", billing)
    drain("audit", "orders", audit)
    assert billing.seen == [b"ok-1", b"ok-2"] and audit.seen == [b"ok-1", b"bad", b"ok-2"]
    assert len(models.Record.objects.filter(topic_id=topics.get_topic("billing.DLQ").id)) == 1
    return billing, audit


def test_a_redrive_reaches_only_the_group_that_failed(failed):
    billing, audit = failed
    plan = replay.plan_replay("billing.DLQ", to_original=True)
    assert replay.execute_replay(plan).replayed == 1
    billing.broken.clear()  # the cause is fixed
    drain("billing", "orders", billing)
    drain("audit", "orders", audit)
    assert billing.seen == [b"ok-1", b"ok-2", b"bad"]
    assert audit.seen == [b"ok-1", b"bad", b"ok-2"]  # not a second time
    assert lag("audit", "orders") == lag("billing", "orders") == 0  # audit committed past it


def test_a_share_group_passes_over_a_record_redriven_to_another_group(failed):
    billing, _ = failed
    replay.execute_replay(replay.plan_replay("billing.DLQ", to_original=True))
    counter = Handler()
    drain("counter", "orders", counter, share=True)
    assert sorted(counter.seen) == [b"bad", b"ok-1", b"ok-2"]  # the original bad, not its redriven copy
    assert not models.ShareDelivery.objects.exists()  # the copy was accepted, not left locked


def test_all_groups_sends_the_dead_letter_to_every_group_again(failed):
    billing, audit = failed
    plan = replay.plan_replay("billing.DLQ", to_original=True, all_groups=True)
    replay.execute_replay(plan)
    billing.broken.clear()
    drain("billing", "orders", billing)
    drain("audit", "orders", audit)
    assert billing.seen == [b"ok-1", b"ok-2", b"bad"]
    assert audit.seen == [b"ok-1", b"bad", b"ok-2", b"bad"]


def test_a_record_that_fails_again_after_a_redrive_is_redriven_to_the_same_group(failed):
    billing, audit = failed
    replay.execute_replay(replay.plan_replay("billing.DLQ", to_original=True))
    drain("billing", "orders", billing)  # still broken: dead-lettered again, with fresh headers
    plan = replay.plan_replay("billing.DLQ", to_original=True, from_offset=1)
    assert plan.count == 1
    replay.execute_replay(plan)
    (copy,) = [r for r in models.Record.objects.filter(topic_id=topics.get_topic("orders").id, offset__gte=3)
               if r.headers.get(types.REPLAY_ORIGIN) == "billing.DLQ-0@1"]
    assert copy.headers[types.REDRIVE_GROUP] == "billing"


def test_a_dead_letter_without_its_group_cannot_be_redriven_but_can_go_to_all_groups(db):
    topics.create_topic("orders", partitions=1)
    topics.create_topic("orders.DLQ", partitions=1)
    producer.send("orders.DLQ", b"x", headers={types.DLQ_ORIGINAL_TOPIC: "orders"})
    plan = replay.plan_replay("orders.DLQ", to_original=True)
    assert [r.problem for r in plan.invalid] == [
        "no sluice.dlq.group header: no group to redrive it to (all groups: all_groups)"]
    with pytest.raises(exceptions.UnreplayableRecords):
        replay.execute_replay(plan)
    assert replay.execute_replay(replay.plan_replay("orders.DLQ", to_original=True, all_groups=True)).replayed == 1
    with pytest.raises(exceptions.InvalidArgument, match="all_groups goes with to_original"):
        replay.plan_replay("orders.DLQ", to_topic="orders", all_groups=True)
