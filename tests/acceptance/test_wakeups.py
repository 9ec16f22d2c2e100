"""A steady stream from another process never finds a reader asleep past a commit (issue 10): zero
late wake-ups for ordered members, share members, ordered and share workers, the outbox relay and
the delayed-record mover, while each receives everything. That the counter does count a reader
that slept past a commit is shown in tests/queueing/test_wakeups.py."""
import subprocess
import sys
import threading
import time

import pytest
from django.db import connection

from outbox import relay
from queueing import consumer, delayed, registry, share, topics, worker
from tests.conftest import ROOT

pytestmark = [pytest.mark.acceptance, pytest.mark.django_db(transaction=True)]

AGENT = ROOT / "tests" / "acceptance" / "stream_agent.py"
# Single sends at 800 a second (a send every 1.25 ms, so an ask often meets an append in flight);
# outbox publishes and delayed sends at 100 a second each.
RATE, SIDE_RATE, SECONDS = 800, 100, 4


class Reader(threading.Thread):
    """Polls a consumer in a thread of its own until stopped, counting what it reads."""

    def __init__(self, make):
        super().__init__(daemon=True)
        self.make, self.member, self.read = make, None, set()  # (partition, offset)
        self.ready, self.stopping = threading.Event(), threading.Event()

    def run(self):
        try:
            self.member = self.make()
            self.member.poll(timeout=0)  # joined before the stream starts
            self.ready.set()
            while not self.stopping.is_set():
                records = self.member.poll(timeout=1.0)
                if isinstance(self.member, share.ShareConsumer):
                    for record in records:
                        self.member.accept(record)
                self.read.update((r.partition, r.offset) for r in records)
        finally:
            self.ready.set()
            if self.member is not None:
                self.member.close()
            connection.close()


class Looping(threading.Thread):
    """Runs a loop (worker, relay, mover) in a thread until stopped."""

    def __init__(self, loop):
        super().__init__(target=loop.run, daemon=True)
        self.loop = loop


def subscription(group, topic, mode, seen):
    return {topic: registry.Subscription(group=group, topic=topic, function=lambda record: seen.append(record.offset),
                                         auto_offset_reset="earliest", mode=mode)}


def test_a_steady_stream_from_another_process_meets_no_late_wakeups(process_env, settings):
    settings.SLUICE = {**settings.SLUICE, "POLL_FALLBACK_MS": 1000}
    topics.create_topic("stream", partitions=4)
    topics.create_topic("relayed", partitions=2)
    topics.create_topic("later", partitions=2)
    readers = {
        "ordered member": Reader(lambda: consumer.Consumer("solo", ["stream"], auto_offset_reset="earliest")),
        "ordered member 1 of 2": Reader(lambda: consumer.Consumer("pair", ["stream"], auto_offset_reset="earliest")),
        "ordered member 2 of 2": Reader(lambda: consumer.Consumer("pair", ["stream"], auto_offset_reset="earliest")),
        "share member": Reader(lambda: share.ShareConsumer("sharers", ["stream"], auto_offset_reset="earliest")),
    }
    ordered_seen, share_seen = [], []
    loops = {
        "worker": Looping(worker.Worker("workers", subscription("workers", "stream", "ordered", ordered_seen))),
        "share worker": Looping(worker.ShareWorker("share-workers",
                                                   subscription("share-workers", "stream", "share", share_seen))),
        "outbox relay": Looping(relay.Relay()),
        "delayed-record mover": Looping(delayed.Mover()),
    }
    pairs = ("ordered member 1 of 2", "ordered member 2 of 2")
    for thread in [*readers.values(), *loops.values()]:
        thread.start()
    try:
        for reader in readers.values():
            assert reader.ready.wait(30) and reader.member is not None
        time.sleep(1.0)  # the loops joined and are asleep, asking to be woken
        agent = subprocess.run(
            [sys.executable, str(AGENT), "--rate", str(RATE), "--seconds", str(SECONDS), "--topic", "stream",
             "--side-rate", str(SIDE_RATE), "--outbox-topic", "relayed", "--delayed-topic", "later"],
            env=process_env, capture_output=True, text=True, timeout=120,
        )
        assert agent.returncode == 0, agent.stderr[-2000:]
        counts = agent.stdout.split()
        sent, published, moved = int(counts[1]), int(counts[3]), int(counts[5])
        assert (sent, published, moved) == (RATE * SECONDS, SIDE_RATE * SECONDS, SIDE_RATE * SECONDS)

        def received():
            return {
                **{name: len(reader.read) for name, reader in readers.items() if name not in pairs},
                "ordered members 1 and 2 of 2": len(set().union(*(readers[name].read for name in pairs))),
                "worker": len(ordered_seen), "share worker": len(share_seen),
                "outbox relay": loops["outbox relay"].loop.delivered,
                "delayed-record mover": loops["delayed-record mover"].loop.moved,
            }

        deadline = time.monotonic() + 60
        expected = {**dict.fromkeys(received(), sent), "outbox relay": published, "delayed-record mover": moved}
        while time.monotonic() < deadline and received() != expected:
            time.sleep(0.1)
    finally:
        for reader in readers.values():
            reader.stopping.set()
        for thread in loops.values():
            thread.loop.stop()
        for thread in [*readers.values(), *loops.values()]:
            thread.join(30)
    late = {name: reader.member.late_wakeups for name, reader in readers.items()}
    late.update({name: thread.loop.late_wakeups for name, thread in loops.items()})
    assert late == dict.fromkeys(late, 0)
    assert received() == expected  # distinct records: a member may read again what a rebalance took
