import random

import pytest

from queueing import partitioner

# Kafka's own vectors, from clients/src/test/java/org/apache/kafka/common/utils/UtilsTest.java (testMurmur2).
KAFKA_MURMUR2 = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


@pytest.mark.parametrize("data,expected", KAFKA_MURMUR2.items())
def test_murmur2_matches_kafka(data, expected):
    assert partitioner.murmur2(data) == expected


def test_a_key_lands_on_kafkas_partition():
    # Utils.toPositive(murmur2(key)) % numPartitions, as DefaultPartitioner / BuiltInPartitioner do.
    for data, hashed in KAFKA_MURMUR2.items():
        for count in (1, 3, 4, 12, 100):
            assert partitioner.partition_for_key(data, count) == (hashed & 0x7FFFFFFF) % count


def test_sticky_partitioning_fills_a_batch_then_moves_on():
    sticky = partitioner.StickyPartitioner(batch_bytes=100, rng=random.Random(7))
    first = [sticky.partition("t", 4, 10) for _ in range(10)]
    assert len(set(first)) == 1
    after = sticky.partition("t", 4, 10)
    assert after != first[0]


def test_sticky_partitioning_spreads_over_time():
    sticky = partitioner.StickyPartitioner(batch_bytes=10, rng=random.Random(1))
    seen = {sticky.partition("t", 5, 10) for _ in range(200)}
    assert seen == {0, 1, 2, 3, 4}


def test_a_single_partition_topic_always_gets_partition_zero():
    sticky = partitioner.StickyPartitioner(batch_bytes=1)
    assert {sticky.partition("t", 1, 5) for _ in range(20)} == {0}
