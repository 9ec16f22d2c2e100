"""Wake-ups: appends and publishes notify only while a reader waits, and a waiting reader never
sleeps past a commit: not one an append in flight made while it asked, not one a long transaction
made, and a lost notification shows as a late wake-up."""
import multiprocessing
import threading
import time

import pytest
from django.db import connection, transaction

from queueing import consumer, producer, share, storage, topics, wakeups

pytestmark = pytest.mark.django_db(transaction=True)


def notified(listener, seconds=0.3):
    return [n.payload for n in listener.notifies(timeout=seconds, stop_after=1)]


def wait_until_asked(member):
    """Poll until the member holds its ask (a short poll on a loaded machine may time out before it
    asks); bounded."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        assert member.poll(timeout=0.05) == []
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = %s",
                           [member._listener.info.backend_pid])
            if cursor.fetchone()[0]:
                return
    raise AssertionError("the member never asked to be woken")


def ask(listener, slots):
    """Ask for the appends of slots; return the refused keys."""
    return storage.ask_for_wakeups(listener, space=wakeups.APPENDS, keys=wakeups.partition_keys(slots))


def test_appends_notify_only_while_a_consumer_waits():
    info = topics.create_topic("asked", partitions=2)
    with wakeups.listen_connection([f"sluice_t{info.id}"]) as listener:
        producer.send("asked", b"a", partition=0)
        assert notified(listener) == []  # nobody asked: the append stayed silent
        assert ask(listener, {(info.id, 0)}) == set()
        producer.send("asked", b"b", partition=0)  # the single-record statement
        assert notified(listener, 5) == ["0"]
        producer.send("asked", b"c", partition=1)  # not asked for
        assert notified(listener) == []
        producer.send_batch("asked", [b"d"] * 3, partition=0)  # the batch statement
        assert notified(listener, 5) == ["0"]
        producer.send_batch("asked", [b"e"] * 200, partition=0)  # reserve_offsets, then COPY
        assert notified(listener, 5) == ["0"]
        storage.stop_waiting(listener)
        producer.send("asked", b"f", partition=0)
        assert notified(listener) == []


def test_an_ask_waits_out_an_append_that_missed_it():
    # A silent append holds its partition's wake-up key until it commits: the ask is refused, and
    # waiting for the writer times out until then; once it holds, a fetch sees that append.
    info = topics.create_topic("in-flight", partitions=2)
    keys = wakeups.partition_keys({(info.id, 0)})
    with wakeups.listen_connection([f"sluice_t{info.id}"]) as listener:
        with transaction.atomic():
            producer.send("in-flight", b"late", partition=0)
            assert ask(listener, {(info.id, 0), (info.id, 1)}) == keys  # partition 1's key is held
            assert storage.wait_for_writers(listener, space=wakeups.APPENDS, keys=keys, timeout=0.05) is False
        assert storage.wait_for_writers(listener, space=wakeups.APPENDS, keys=keys, timeout=0.05) is True
        assert [r[4] for r in storage.fetch_records(positions={(info.id, 0): 0}, per_partition=10)] == [b"late"]
        producer.send("in-flight", b"next", partition=0)
        assert notified(listener, 5) == ["0"]
        producer.send("in-flight", b"other", partition=1)
        assert notified(listener, 5) == ["1"]


def test_an_append_that_sees_a_queued_ask_notifies():
    # While a reader queues for a key (behind an append in flight), other appends of that key find
    # the queue and notify, since their try for the key is refused too.
    info = topics.create_topic("queued", partitions=65)  # 0 and 64 share a key
    keys = wakeups.partition_keys({(info.id, 0)})
    with wakeups.listen_connection([f"sluice_t{info.id}"]) as listener:
        with transaction.atomic():
            producer.send("queued", b"long", partition=0)
            queued = threading.Thread(target=storage.wait_for_writers, args=(listener,),
                                      kwargs={"space": wakeups.APPENDS, "keys": keys, "timeout": 30})
            queued.start()
            while not _waits_for_a_lock(listener.info.backend_pid):
                time.sleep(0.01)
            other = threading.Thread(target=_send_and_close, args=("queued", b"beside", 64))
            other.start()
            other.join(10)
        queued.join(10)
        assert not queued.is_alive()
        assert notified(listener, 5) == ["64"]


def _waits_for_a_lock(pid):
    with connection.cursor() as cursor:
        cursor.execute("SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s", [pid])
        row = cursor.fetchone()
        return bool(row and row[0])


def _send_and_close(topic, value, partition):
    try:
        producer.send(topic, value, partition=partition)
    finally:
        connection.close()


def test_an_ask_takes_at_most_64_locks_a_topic():
    # Advisory locks take room in the server's lock table: partitions 64 apart share a key.
    info = topics.create_topic("wide", partitions=150)
    with wakeups.listen_connection([f"sluice_t{info.id}"]) as listener:
        assert ask(listener, {(info.id, p) for p in range(150)}) == set()
        held = connection.cursor()
        held.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = %s AND classid = %s",
                     [listener.info.backend_pid, wakeups.APPENDS])
        assert held.fetchone()[0] == 64
        storage.stop_waiting(listener)
        held.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = %s",
                     [listener.info.backend_pid])
        assert held.fetchone()[0] == 0
        producer.send("wide", b"x", partition=130)  # 130 and 2 share a key with nobody waiting: silent
        assert notified(listener) == []


def test_a_consumer_behind_a_long_transaction_wakes_at_its_commit(settings):
    """Guards the hole of issue 10: an ask refused because an append was in flight used to back off
    without asking, up to the fallback interval, so the consumer slept past the commit."""
    settings.SLUICE = {**settings.SLUICE, "POLL_FALLBACK_MS": 60_000}
    topics.create_topic("long", partitions=2)
    committed = threading.Event()

    def long_transaction():
        with transaction.atomic():
            producer.send("long", b"slow", partition=0)
            time.sleep(0.5)  # business work after the send, the append's key held all along
        committed.set()
        connection.close()

    with consumer.Consumer("long", ["long"], auto_offset_reset="earliest") as member:
        member.poll(timeout=0)
        writer = threading.Thread(target=long_transaction)
        writer.start()
        time.sleep(0.1)  # the append is in flight, silent: nobody was waiting when it was made
        producer.send("long", b"beside", partition=1)  # partition 1's key was free: read at once
        got = member.poll(timeout=30)
        assert [r.value for r in got] == [b"beside"]
        got = member.poll(timeout=30)  # 60 s of fallback: only the commit can end this wait in time
        writer.join(10)
        assert committed.is_set() and [r.value for r in got] == [b"slow"]
        assert member.late_wakeups == 0


def _silent_append(topic_id, partition, value):
    """Append a record as a broken writer would: without trying the wake-up key (a lost NOTIFY)."""
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("UPDATE queueing_partition SET next_offset = next_offset + 1 "
                           "WHERE topic_id = %s AND number = %s RETURNING next_offset - 1", [topic_id, partition])
            offset = cursor.fetchone()[0]
            cursor.execute('INSERT INTO queueing_record (topic_id, partition, "offset", value, value_format, '
                           "headers, timestamp) VALUES (%s, %s, %s, %s, 0, NULL, now())",
                           [topic_id, partition, offset, value])
    finally:
        connection.close()


def _while_polling(member, write):
    """Poll (up to 5 s) while another thread makes write() 0.1 s into the wait; return the records."""
    writer = threading.Timer(0.1, write)
    writer.start()
    try:
        return member.poll(timeout=5)
    finally:
        writer.join(10)


def test_a_lost_notification_is_counted_as_a_late_wakeup(settings):
    # The counter the steady-stream test relies on does see a reader sleep past a commit: a write
    # that skips the wake-up protocol is found by the fallback poll, and counted.
    settings.SLUICE = {**settings.SLUICE, "POLL_FALLBACK_MS": 300}
    info = topics.create_topic("lost", partitions=1)
    with consumer.Consumer("lost", ["lost"], auto_offset_reset="latest") as member:
        assert member.poll(timeout=0.05) == []  # joined
        got = _while_polling(member, lambda: _silent_append(info.id, 0, b"unannounced"))
        assert [r.value for r in got] == [b"unannounced"]
        assert member.late_wakeups == 1
        got = _while_polling(member, lambda: _send_and_close("lost", b"announced", 0))
        assert [r.value for r in got] == [b"announced"]
        assert member.late_wakeups == 1  # this one woke it
    member = share.ShareConsumer("lost-share", ["lost"], auto_offset_reset="latest")
    try:
        assert member.poll(timeout=0.05) == []
        got = _while_polling(member, lambda: _silent_append(info.id, 0, b"unannounced too"))
        assert [r.value for r in got] == [b"unannounced too"]
        assert member.late_wakeups == 1
        member.accept(got[0])
    finally:
        member.close()


def test_a_commit_just_after_a_sleep_ran_out_is_not_a_late_wakeup():
    # A sleep that runs out (a poll's own timeout) as a writer commits: the read right after finds
    # the record, whose NOTIFY comes only after the drain before that read. The commit did not come
    # before the sleep's end, so it is no late wake-up; the NOTIFY still counts for the next drain.
    info = topics.create_topic("boundary", partitions=1)
    keys = wakeups.partition_keys({(info.id, 0)})
    with wakeups.listen_connection([f"sluice_t{info.id}"]) as listener:
        waiter = wakeups.Waiter(wakeups.APPENDS, "the test")

        def listen(seconds):
            return wakeups.heard(listener, seconds)

        def sleep_out():
            while not waiter.sleep(listener, keys, 0.05, listen):  # the first sleep asks, then reads again
                waiter.found(listener, 0)
            assert waiter.drain(listen) is False

        sleep_out()
        producer.send("boundary", b"just after", partition=0)  # the writer sees the ask: it notifies
        time.sleep(0.2)  # its NOTIFY is here by now, as after the read that found the record
        waiter.found(listener, 1)
        assert waiter.late_wakeups == 0
        assert waiter.drain(listen) is True  # taken by found(), still reported to the next read

        sleep_out()
        _silent_append(info.id, 0, b"never announced")  # committed before the read, no NOTIFY
        waiter.found(listener, 1)
        assert waiter.late_wakeups == 1


def test_a_share_poll_given_pipes_ends_when_one_is_readable():
    # The task worker's poll waits for the log and for its processes at once: a pipe that becomes
    # readable ends the wait with nothing acquired; records still end it as before.
    topics.create_topic("woken", partitions=1)
    member = share.ShareConsumer("woken", ["woken"], auto_offset_reset="earliest")
    ours, theirs = multiprocessing.Pipe()
    later = threading.Timer(2.0, lambda: _send_and_close("woken", b"later", 0))
    try:
        assert member.poll(timeout=0) == []
        threading.Timer(0.1, lambda: theirs.send("outcome")).start()
        later.start()
        assert member.poll(timeout=30, wake=[ours]) == []  # the pipe's, before the record of 2 s
        assert ours.recv() == "outcome"
        got = member.poll(timeout=30, wake=[ours])
        assert [r.value for r in got] == [b"later"]
        member.accept(got[0])
        assert member.late_wakeups == 0
    finally:
        later.join(10)
        member.close()
        ours.close()
        theirs.close()


def test_a_member_is_not_woken_by_appends_for_another_member():
    # Every member LISTENs on the topic's channel; an append's NOTIFY names its partition, and only
    # the member that owns it fetches.
    topics.create_topic("halves", partitions=2)
    with consumer.Consumer("halves", ["halves"]) as first, consumer.Consumer("halves", ["halves"]) as second:
        first.poll(timeout=0)
        second.poll(timeout=0)
        deadline = time.monotonic() + 10
        while len(first.assigned()) != 1 and time.monotonic() < deadline:
            first.poll(timeout=0.1)  # re-syncs to the generation the second member's join made
        (mine,), (theirs,) = first.assigned(), second.assigned()
        for member in (first, second):
            wait_until_asked(member)
        producer.send("halves", b"theirs", partition=theirs.partition)
        assert first._wait(0.3) is False
        producer.send("halves", b"mine", partition=mine.partition)
        assert first._wait(5) is True
        assert [r.value for r in first.poll(timeout=5)] == [b"mine"]
        assert [r.value for r in second.poll(timeout=5)] == [b"theirs"]
