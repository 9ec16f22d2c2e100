import random

import pytest

from queueing import exceptions, models, retries, topics


def test_the_group_policy_wins_over_the_topic_and_the_topic_over_settings(db, settings):
    settings.SLUICE = {**settings.SLUICE, "DELIVERY_LIMIT": 9, "BACKOFF_BASE_MS": 100}
    topics.create_topic("t")
    retries.configure_topic("t", delivery_limit=4, dead_letter_topic="t.dead")
    group = models.ConsumerGroup.objects.create(name="g", delivery_limit=2)
    policy = retries.resolve(group, models.Topic.objects.get(name="t"))
    assert (policy.delivery_limit, policy.dead_letter_topic, policy.backoff_base_ms) == (2, "t.dead", 100)
    bare = retries.resolve(models.ConsumerGroup.objects.create(name="h"), models.Topic.objects.create(
        name="u", partition_count=1, max_message_bytes=10))
    assert (bare.delivery_limit, bare.dead_letter_topic) == (9, "h.DLQ")


def test_exponential_backoff_doubles_with_jitter_up_to_the_ceiling():
    policy = retries.Policy(delivery_limit=5, backoff="exponential", backoff_base_ms=1000, backoff_max_ms=5000,
                            backoff_levels_ms=(), dead_letter_topic="d")
    rng = random.Random(3)
    for attempt, ceiling in [(1, 1000), (2, 2000), (3, 4000), (4, 5000), (30, 5000)]:
        delays = [policy.delay_ms(attempt, rng) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1  # jittered


def test_levels_follow_the_list_then_stay_at_the_last():
    policy = retries.Policy(delivery_limit=5, backoff="levels", backoff_base_ms=1, backoff_max_ms=1,
                            backoff_levels_ms=(10, 20), dead_letter_topic="d")
    assert [policy.delay_ms(n) for n in (1, 2, 3, 9)] == [10, 20, 20, 20]
    rocketmq = retries.Policy(delivery_limit=5, backoff="levels", backoff_base_ms=1, backoff_max_ms=1,
                              backoff_levels_ms=(), dead_letter_topic="d")
    assert rocketmq.delay_ms(1) == 10_000 and rocketmq.delay_ms(16) == 7_200_000


def test_a_topic_policy_on_a_missing_topic_is_an_error(db):
    with pytest.raises(exceptions.TopicNotFound):
        retries.configure_topic("missing", delivery_limit=3)
