import pytest

from queueing import models, producer, registry, worker


@pytest.fixture
def handled():
    seen = []
    yield seen
    registry.unregister("billing")


@pytest.fixture(autouse=True)
def fast(settings):
    settings.SLUICE = {**settings.SLUICE, "POLL_FALLBACK_MS": 50, "HEARTBEAT_INTERVAL_MS": 60_000,
                       "BACKOFF_BASE_MS": 10, "BACKOFF_MAX_MS": 50}


def run_until(loop, condition, steps=30):
    for _ in range(steps):
        loop.run_once()
        if condition():
            return


def test_the_worker_runs_handlers_in_order_and_commits(db, topic, handled):
    registry.handler(topic.name, group="billing")(lambda record: handled.append((record.partition, record.offset)))
    producer.send_batch(topic.name, [b"a", b"b", b"c"], partition=1)
    loop = worker.Worker("billing", registry.subscriptions("billing"), poll_timeout=0.1)
    try:
        run_until(loop, lambda: len(handled) == 3)
    finally:
        loop.stop()
        loop.consumer.close(commit=False)
    assert handled == [(1, 0), (1, 1), (1, 2)]
    assert models.CommittedOffset.objects.get(group__name="billing", partition=1).offset == 3


def test_a_failing_handler_is_retried_in_place(db, topic, handled):
    failures = {"left": 2}

    def flaky(record):
        if record.offset == 1 and failures["left"]:
            failures["left"] -= 1
            raise ValueError("downstream unavailable")
        handled.append(record.offset)

    registry.handler(topic.name, group="billing")(flaky)
    producer.send_batch(topic.name, [b"a", b"b", b"c"], partition=0)
    loop = worker.Worker("billing", registry.subscriptions("billing"), poll_timeout=0.1)
    try:
        run_until(loop, lambda: len(handled) == 3)
    finally:
        loop.stop()
        loop.consumer.close(commit=False)
    assert handled == [0, 1, 2]
    assert failures["left"] == 0


def test_a_stopped_worker_commits_only_what_it_handled(db, topic, handled):
    loop = None

    def stop_after_first(record):
        handled.append(record.offset)
        loop.stop()

    registry.handler(topic.name, group="billing")(stop_after_first)
    producer.send_batch(topic.name, [b"a", b"b"], partition=2)
    loop = worker.Worker("billing", registry.subscriptions("billing"), poll_timeout=0.1)
    loop.run_once()
    loop.consumer.close(commit=False)
    assert handled == [0]
    assert models.CommittedOffset.objects.get(group__name="billing", partition=2).offset == 1


def test_a_handler_registered_twice_for_one_topic_is_refused(handled):
    registry.handler("x", group="billing")(print)
    from queueing import exceptions

    with pytest.raises(exceptions.InvalidArgument):
        registry.handler("x", group="billing")(repr)


def test_past_the_delivery_limit_an_ordered_record_is_dead_lettered_and_passed(db, topic, handled, settings):
    from queueing import topics, types

    settings.SLUICE = {**settings.SLUICE, "DELIVERY_LIMIT": 3}

    def handler(record):
        if record.value == b"bad":
            raise ValueError("cannot bill")
        handled.append(record.value)

    registry.handler(topic.name, group="billing")(handler)
    producer.send_batch(topic.name, [b"ok1", b"bad", b"ok2"], partition=0)
    loop = worker.Worker("billing", registry.subscriptions("billing"), poll_timeout=0.1)
    try:
        run_until(loop, lambda: len(handled) == 2)
    finally:
        loop.stop()
        loop.consumer.close(commit=False)
    assert handled == [b"ok1", b"ok2"]
    attempts = list(models.DeliveryAttempt.objects.order_by("id").values_list("offset", "attempt", "outcome"))
    assert attempts == [(1, 1, "failed"), (1, 2, "failed"), (1, 3, "dead_lettered")]
    dlq = topics.get_topic("billing.DLQ")
    [letter] = models.Record.objects.filter(topic_id=dlq.id)
    assert bytes(letter.value) == b"bad"
    assert letter.headers[types.DLQ_ORIGINAL_OFFSET] == "1"
    assert letter.headers[types.DLQ_ERROR] == "ValueError: cannot bill"
    assert models.CommittedOffset.objects.get(group__name="billing", partition=0).offset == 3


def test_a_rejected_ordered_record_is_dead_lettered_at_once(db, topic, handled):
    from queueing import exceptions

    def handler(record):
        raise exceptions.Reject("malformed")

    registry.handler(topic.name, group="billing")(handler)
    producer.send(topic.name, b"x", partition=0)
    loop = worker.Worker("billing", registry.subscriptions("billing"), poll_timeout=0.1)
    try:
        run_until(loop, lambda: models.DeliveryAttempt.objects.exists())
    finally:
        loop.stop()
        loop.consumer.close(commit=False)
    assert list(models.DeliveryAttempt.objects.values_list("attempt", "outcome", "error")) == [
        (1, "dead_lettered", "malformed")
    ]


def test_the_share_worker_accepts_retries_and_dead_letters(db, handled, settings):
    from queueing import share, topics

    settings.SLUICE = {**settings.SLUICE, "BACKOFF_BASE_MS": 1, "BACKOFF_MAX_MS": 1}
    topics.create_topic("jobs", partitions=2)
    share.configure_group("billing", delivery_limit=2)
    tries = {}

    def handler(record):
        tries[record.value] = tries.get(record.value, 0) + 1
        if record.value == b"flaky" and tries[record.value] == 1:
            raise RuntimeError("first time fails")
        if record.value == b"broken":
            raise RuntimeError("always fails")
        handled.append(record.value)

    registry.handler("jobs", group="billing", mode="share")(handler)
    producer.send_batch("jobs", [b"a", b"flaky", b"broken", b"b"], partition=1)
    loop = worker.ShareWorker("billing", registry.subscriptions("billing"), poll_timeout=0.05)
    try:
        run_until(loop, lambda: len(handled) == 3 and not models.ShareDelivery.objects.exists(), steps=100)
    finally:
        loop.stop()
        loop.close()
    assert sorted(handled) == [b"a", b"b", b"flaky"]
    assert tries[b"broken"] == 2
    assert models.DeliveryAttempt.objects.filter(outcome="dead_lettered").count() == 1


def test_the_share_worker_renews_locks_while_a_batch_takes_long(db, handled):
    import time

    from queueing import share, topics

    topics.create_topic("slow", partitions=1)
    share.configure_group("billing", lock_duration_ms=300)

    def slow(record):
        time.sleep(0.2)
        handled.append(record.offset)

    registry.handler("slow", group="billing", mode="share")(slow)
    producer.send_batch("slow", [b"a", b"b", b"c", b"d"])
    loop = worker.ShareWorker("billing", registry.subscriptions("billing"), poll_timeout=0.05)
    try:
        run_until(loop, lambda: len(handled) >= 4)
    finally:
        loop.stop()
        loop.close()
    assert handled == [0, 1, 2, 3]  # each handled once: no lock ran out under the batch
    assert not models.DeliveryAttempt.objects.filter(outcome="expired").exists()
    assert not models.ShareDelivery.objects.exists()
