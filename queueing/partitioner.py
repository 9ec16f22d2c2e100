"""Kafka's default partitioner: murmur2 of the key bytes, so a key lands where Kafka would put it."""
import random

_MASK = 0xFFFFFFFF
_M = 0x5BD1E995
_SEED = 0x9747B28C


def murmur2(data: bytes) -> int:
    """Return Kafka's murmur2 hash of data as a signed 32-bit integer (Utils.murmur2)."""
    length = len(data)
    h = (_SEED ^ length) & _MASK
    whole = length - length % 4
    for i in range(0, whole, 4):
        k = data[i] | data[i + 1] << 8 | data[i + 2] << 16 | data[i + 3] << 24
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = (h * _M) & _MASK
        h ^= k
    tail = length % 4
    if tail >= 3:
        h ^= data[whole + 2] << 16
    if tail >= 2:
        h ^= data[whole + 1] << 8
    if tail >= 1:
        h ^= data[whole]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def partition_for_key(key: bytes, partition_count: int) -> int:
    """Return the partition Kafka's default partitioner picks for key: toPositive(murmur2) % count."""
    return (murmur2(key) & 0x7FFFFFFF) % partition_count


class StickyPartitioner:
    """Keyless records stick to one partition until about batch_bytes have gone there (KIP-480).

    Sticking fills batches instead of spreading single records over every partition; switching
    after a batch keeps the partitions even over time.
    """

    def __init__(self, batch_bytes=16384, rng=None):
        self.batch_bytes = batch_bytes
        self._rng = rng or random.Random()
        self._current = {}  # topic -> (partition, bytes sent there)

    def partition(self, topic: str, partition_count: int, size: int) -> int:
        current, sent = self._current.get(topic, (None, 0))
        if current is None or current >= partition_count or sent >= self.batch_bytes:
            current, sent = self._next(current, partition_count), 0
        self._current[topic] = (current, sent + size)
        return current

    def new_batch(self, topic: str) -> None:
        """Move the topic to another partition at the next keyless record."""
        self._current.pop(topic, None)

    def _next(self, previous, partition_count):
        if partition_count == 1:
            return 0
        choice = self._rng.randrange(partition_count - 1)
        return choice + 1 if previous is not None and choice >= previous else choice
