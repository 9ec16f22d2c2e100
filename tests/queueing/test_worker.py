import pytest

from queueing import models, producer, registry, worker


@pytest.fixture
def handled():
    seen = []
    yield seen
    registry.unregister("billing")


@pytest.fixture(autouse=True)
def fast(settings):
    settings.SLUICE = {**settings.SLUICE, "POLL_FALLBACK_MS": 50, "HEARTBEAT_INTERVAL_MS": 60_000}


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
    loop = worker.Worker("billing", registry.subscriptions("billing"), poll_timeout=0.1, retry_backoff=(0.01, 0.05))
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
