"""The kombu transport on a real PostgreSQL server: publish, get, ack, reject, requeue, purge, size,
priorities (bands read highest first), prefetch, bindings shared between connections and processes, lock renewal and expiry, eta messages
held in the database, and consumers woken by commits."""
import datetime
import decimal
import gc
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from django.db import connection as django_connection
from kombu import Connection, Consumer, Exchange, Producer, Queue
from kombu.exceptions import ChannelError

from queueing import models as engine_models
from scheduler.compat import kombu_store, kombu_transport, models
from tests.conftest import ROOT, database_url, ends_at_stop

pytestmark = pytest.mark.django_db(transaction=True)
AGENT = ROOT / "tests" / "scheduler" / "compat" / "kombu_agent.py"


@pytest.fixture
def connect():
    """kombu Connections on `sluice://` (this process's Django database); all closed at the end."""
    opened = []

    def open_connection(**options):
        conn = Connection("sluice://", transport_options=options)
        conn.connect()
        opened.append(conn)
        return conn

    yield open_connection
    for conn in opened:
        conn.release()


@pytest.fixture
def agents(process_env):
    """Start kombu_agent.py processes on `sluice+postgresql://` (the standalone form); killed at the end."""
    started = []

    def start(*args, **variables):
        env = {**process_env, "SLUICE_POLL_FALLBACK_MS": "30000", **variables}
        env.pop("DJANGO_SETTINGS_MODULE", None)  # a plain program: the transport sets Django up itself
        agent = subprocess.Popen([sys.executable, str(AGENT), f"sluice+{database_url()}", *args], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT)
        started.append(agent)
        return agent

    yield start
    for agent in started:
        if agent.poll() is None:
            agent.kill()
        agent.wait(10)
        agent.stdout.close()


def read_line(agent, prefix, timeout=60):
    """The agent's next line starting with prefix (its other lines are skipped), within timeout."""
    found = []

    def read():
        for line in agent.stdout:
            if line.startswith(prefix):
                found.append(line.strip())
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    assert found, f"the agent never said {prefix!r}"
    return found[0]


def wait_for(condition, timeout=30):
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)
    return result


def declared(conn, name, **options):
    queue = Queue(name, Exchange(name, type="direct"), routing_key=name, **options)(conn.default_channel)
    queue.declare()
    return queue


def publish(conn, queue, *bodies, **options):
    producer = Producer(conn.default_channel, exchange=queue.exchange, routing_key=queue.routing_key)
    for body in bodies:
        producer.publish(body, **options)


def test_the_alias_resolves_to_the_transport():
    assert Connection("sluice://").transport_cls == "sluice"
    assert isinstance(Connection("sluice://").transport, kombu_transport.Transport)
    assert Connection("sluice+postgresql://u@h/db").transport.client.hostname == "postgresql://u@h/db"


def test_a_queue_is_a_topic_read_by_a_share_group_of_the_same_name(connect):
    conn = connect()
    queue = declared(conn, "orders")
    publish(conn, queue, {"n": 1})
    assert engine_models.Topic.objects.filter(name="kombu.orders").exists()
    assert queue.get().payload == {"n": 1}
    assert engine_models.ShareGroup.objects.filter(name="kombu.orders").exists()
    assert kombu_store.topic_for("celery@host.celery.pidbox").startswith("kombu.celery_host.celery.pidbox-")
    assert kombu_store.topic_for("a@b") != kombu_store.topic_for("a#b")
    assert kombu_store.topic_for("orders", 9) == "kombu-p9.orders"
    assert kombu_store.topic_for("celery@host.celery.pidbox", 9).startswith("kombu-p9.celery_host.celery.pidbox-")
    assert len(kombu_store.topic_for("q" * 249, 9)) <= 249


def test_publish_size_get_and_ack(connect):
    conn = connect()
    queue = declared(conn, "basic")
    publish(conn, queue, {"n": 1}, {"n": 2}, {"n": 3})
    assert queue.queue_declare(passive=True).message_count == 3
    message = queue.get()
    assert message.payload == {"n": 1}
    assert message.delivery_info["redelivered"] is False
    assert queue.queue_declare(passive=True).message_count == 2  # held messages are not ready
    message.ack()
    assert [queue.get().payload for _ in range(2)] == [{"n": 2}, {"n": 3}]
    assert queue.get() is None
    assert not engine_models.ShareDelivery.objects.filter(state=engine_models.ShareDelivery.State.ACQUIRED,
                                                          delivery_count=1, offset=0).exists()


def test_headers_kombu_marks_come_back_as_they_were_sent(connect):
    """kombu's JSON marks a datetime, bytes or a Decimal; a message with none is read without kombu's
    hook, one with any through it, and each delivery gets a tag of its own."""
    conn = connect()
    queue = declared(conn, "typed")
    when = datetime.datetime(2026, 12, 5, 23, 30, tzinfo=datetime.timezone.utc)
    publish(conn, queue, {"n": 1}, headers={"when": when, "raw": b"\xff\x00", "amount": decimal.Decimal("1.10")})
    publish(conn, queue, {"n": 2}, headers={"note": "__type__ in text is only text"})
    first, second = queue.get(), queue.get()
    assert first.headers["when"] == when and first.headers["raw"] == b"\xff\x00"
    assert first.headers["amount"] == decimal.Decimal("1.10")
    assert first.payload == {"n": 1} and second.payload == {"n": 2}
    assert second.headers["note"] == "__type__ in text is only text"
    assert first.delivery_tag != second.delivery_tag
    first.requeue()
    again = queue.get()
    assert again.headers["when"] == when and again.delivery_tag not in (first.delivery_tag, second.delivery_tag)


def test_requeue_gives_the_message_back_at_once_and_marks_it_redelivered(connect):
    conn = connect()
    queue = declared(conn, "requeue")
    publish(conn, queue, {"n": 1})
    queue.get().requeue()
    again = queue.get()
    assert again.payload == {"n": 1}
    assert again.delivery_info["redelivered"] is True
    again.ack()
    assert queue.get() is None


def test_reject_without_requeue_dead_letters_the_message(connect):
    conn = connect()
    queue = declared(conn, "rejects")
    publish(conn, queue, {"n": 1})
    queue.get().reject()
    assert queue.get() is None
    assert engine_models.DeliveryAttempt.objects.filter(group_name="kombu.rejects", outcome="dead_lettered").count() == 1


def test_purge_removes_ready_and_waiting_messages_but_not_held_ones(connect):
    conn = connect()
    queue = declared(conn, "purged")
    publish(conn, queue, *[{"n": n} for n in range(5)])
    held = queue.get()
    later = (datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)).isoformat()
    publish(conn, queue, {"n": "eta"}, headers={"eta": later})
    assert queue.purge() == 5  # four ready, one waiting for its eta
    assert queue.queue_declare(passive=True).message_count == 0
    assert not engine_models.DelayedRecord.objects.exists()
    held.ack()
    assert queue.get() is None


def test_prefetch_limits_what_a_consumer_holds(connect):
    conn = connect()
    queue = declared(conn, "prefetch")
    publish(conn, queue, *[{"n": n} for n in range(5)])
    received = []
    channel = conn.default_channel
    with Consumer(channel, [queue], callbacks=[lambda body, message: received.append(message)], prefetch_count=2):
        with pytest.raises(TimeoutError):
            for _ in range(5):
                conn.drain_events(timeout=0.5)
        assert [m.payload["n"] for m in received] == [0, 1]
        received[0].ack()
        conn.drain_events(timeout=5)
        assert [m.payload["n"] for m in received] == [0, 1, 2]
        assert queue.queue_declare(passive=True).message_count == 2
        for message in received[1:]:
            message.ack()


def test_the_event_loops_reads_wait_for_three_quarters_of_the_prefetch_and_leave_one_held():
    assert [kombu_transport._enough(p) for p in (1, 2, 3, 4, 8, 16, 32)] == [1, 1, 2, 3, 6, 12, 24]


def test_an_acknowledgement_wakes_the_reader_only_when_room_opens(connect):
    # The event loop's reader waits for the first room in a full prefetch, then for three quarters: the
    # acknowledgements in between would only wake it to wait again (in a Celery worker, one thread
    # switch a task taken from the main loop).
    conn = connect()
    queue = declared(conn, "room")
    publish(conn, queue, *[{"n": n} for n in range(8)])
    received = []
    with Consumer(conn.default_channel, [queue], callbacks=[lambda body, message: received.append(message)],
                  prefetch_count=8):
        while len(received) < 8:
            conn.drain_events(timeout=5)
        woken = []
        for message in received:
            conn.transport.acked.clear()
            message.ack()
            woken.append(conn.transport.acked.is_set())
        assert woken == [True, False, False, False, False, True, False, False]  # room 1, then 6 of 8
    assert queue.queue_declare(passive=True).message_count == 0


def test_a_consumer_sleeping_on_listen_wakes_at_the_commit(connect, settings):
    # The polling fallback is longer than the wait: only a NOTIFY can end it with the message.
    settings.SLUICE = {**settings.SLUICE, "POLL_FALLBACK_MS": 60_000}
    conn, publisher = connect(), connect()
    queue = declared(conn, "wakeups")
    received = []
    with Consumer(conn.default_channel, [queue], callbacks=[lambda body, message: (received.append(body),
                                                                                    message.ack())]):
        with pytest.raises(TimeoutError):
            conn.drain_events(timeout=0.2)  # nothing there: the consumer is now asleep on LISTEN
        timer = threading.Timer(0.5, lambda: (publish(publisher, declared(publisher, "wakeups"), {"n": 1}),
                                              django_connection.close()))
        timer.start()
        conn.drain_events(timeout=30)
        timer.join()
    assert received == [{"n": 1}]
    assert conn.transport._waiter.late_wakeups == 0


def test_a_stopped_reader_ends_its_sleep_on_listen_at_once(connect, settings):
    # The thread that reads for Celery's event loop sleeps on LISTEN up to the fallback; closing the
    # transport stops it and waits for it, so its sleep must end at the stop, not at the fallback.
    settings.SLUICE = {**settings.SLUICE, "POLL_FALLBACK_MS": 60_000}
    conn = connect()
    queue = declared(conn, "stopping")
    transport = conn.transport
    with Consumer(conn.default_channel, [queue], callbacks=[lambda body, message: message.ack()]):
        with pytest.raises(TimeoutError):
            conn.drain_events(timeout=0.2)  # consuming, and listening
        reader = transport._fetcher = kombu_transport.Fetcher(transport)
        assert ends_at_stop(reader, lambda: transport._waiter.asking, reader.stop)


def test_bindings_made_by_one_connection_route_anothers_messages(connect):
    consumer_side, publisher_side = connect(), connect()
    topic = Exchange("events", type="topic")
    Queue("audit", topic, routing_key="order.#")(consumer_side.default_channel).declare()
    Queue("emails", topic, routing_key="order.paid")(consumer_side.default_channel).declare()
    producer = Producer(publisher_side.default_channel, exchange=Exchange("events", type="topic"))
    producer.publish({"e": "created"}, routing_key="order.created")
    producer.publish({"e": "paid"}, routing_key="order.paid")
    producer.publish({"e": "other"}, routing_key="user.created")
    audit = Queue("audit")(consumer_side.default_channel)
    emails = Queue("emails")(consumer_side.default_channel)
    assert [audit.get().payload, audit.get().payload, audit.get()] == [{"e": "created"}, {"e": "paid"}, None]
    assert [emails.get().payload, emails.get()] == [{"e": "paid"}, None]
    assert models.KombuBinding.objects.filter(exchange="events", exchange_type="topic").count() == 2


def test_passive_declare_of_a_missing_queue_fails_and_delete_removes_everything(connect):
    conn = connect()
    with pytest.raises(ChannelError):
        Queue("missing")(conn.default_channel).queue_declare(passive=True)
    queue = declared(conn, "doomed")
    publish(conn, queue, {"n": 1})
    queue.delete()
    assert not engine_models.Topic.objects.filter(name="kombu.doomed").exists()
    assert not engine_models.ShareGroup.objects.filter(name="kombu.doomed").exists()
    assert not models.KombuQueue.objects.filter(name="doomed").exists()
    assert not models.KombuBinding.objects.filter(queue="doomed").exists()


def test_a_queue_declared_with_expires_goes_once_unused_for_longer(connect):
    conn = connect()
    declared(conn, "reply.queue", expires=10)
    declared(conn, "kept")
    assert kombu_store.expire_queues() == []
    models.KombuQueue.objects.filter(name="reply.queue").update(
        last_used=django_connection.ops.adapt_datetimefield_value(
            datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=11)))
    assert kombu_store.expire_queues() == ["reply.queue"]
    assert not engine_models.Topic.objects.filter(name="kombu.reply.queue").exists()
    assert models.KombuQueue.objects.filter(name="kept").exists()


def test_an_eta_message_stays_in_the_database_until_due(connect):
    conn = connect()
    queue = declared(conn, "eta")
    eta = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=2)
    publish(conn, queue, {"n": "later"}, headers={"eta": eta.isoformat()})
    publish(conn, queue, {"n": "now"})
    assert engine_models.DelayedRecord.objects.count() == 1
    assert queue.get().payload == {"n": "now"}
    assert queue.get() is None  # not delivered early, nor held by a consumer meanwhile
    # The consuming connection moves due delayed records itself (transport option move_delayed).
    received = []
    with Consumer(conn.default_channel, [queue], callbacks=[lambda body, message: (received.append(body),
                                                                                    message.ack())]):
        deadline = time.monotonic() + 30
        while not received and time.monotonic() < deadline:
            try:
                conn.drain_events(timeout=1)
            except TimeoutError:
                pass
    assert received == [{"n": "later"}]
    assert datetime.datetime.now(datetime.UTC) >= eta
    assert not engine_models.DelayedRecord.objects.exists()


def test_fanout_reaches_consumers_in_two_processes(connect, agents):
    first = agents("fanout", "fan-a", "broadcast")
    second = agents("fanout", "fan-b", "broadcast")
    read_line(first, "ready")
    read_line(second, "ready")
    conn = connect()
    Producer(conn.default_channel, exchange=Exchange("broadcast", type="fanout")).publish({"hello": "all"})
    assert json.loads(read_line(first, "got").split(" ", 1)[1]) == {"hello": "all"}
    assert json.loads(read_line(second, "got").split(" ", 1)[1]) == {"hello": "all"}
    assert first.wait(30) == 0 and second.wait(30) == 0


def test_a_program_of_its_own_gets_sluices_log_lines_through_its_own_logging(connect, agents):
    # A Celery worker on `sluice+postgresql://` redirects its standard streams into its log before
    # the transport sets Django up: Sluice's loggers must not write to the stream they find there.
    agent = agents("fanout", "logged", "logged-exchange", AGENT_LOGGING="1")
    lines = []
    while "ready" not in lines or not any(line.startswith("agent INFO sluice.loops:") for line in lines):
        lines.append(read_line(agent, ""))  # the mover's thread logs as the agent says ready, in either order
    assert "agent INFO sluice.loops: delayed-record mover starting" in lines
    conn = connect()
    Producer(conn.default_channel, exchange=Exchange("logged-exchange", type="fanout")).publish({"n": 1})
    assert read_line(agent, "got") == 'got {"n": 1}'
    assert agent.wait(30) == 0


def test_a_live_consumer_keeps_its_message_past_several_lock_durations(connect, agents):
    conn = connect(lock_duration_ms=1000)
    queue = declared(conn, "held")
    publish(conn, queue, {"n": "long"})
    holder = agents("hold", "held", "4", "1000")  # holds it for four lock durations, then acks
    assert json.loads(read_line(holder, "held").split(" ", 1)[1]) == {"n": "long"}
    while holder.poll() is None:
        assert queue.get() is None, "delivered again while its consumer lived and held it"
        time.sleep(0.1)
    assert "acked" in holder.stdout.read()
    assert queue.get() is None
    assert not engine_models.DeliveryAttempt.objects.filter(group_name="kombu.held", outcome="expired").exists()


def test_acknowledgements_are_accepted_in_a_batch_even_when_nothing_more_is_read(connect):
    """Acks wait for the next acquisition to be accepted together; a consumer that reads nothing
    more has them accepted by its renewing thread, before their locks lapse (never delivered again)."""
    conn = connect(lock_duration_ms=1000)
    queue = declared(conn, "batched")
    publish(conn, queue, *[{"n": n} for n in range(3)])
    messages = [queue.get() for _ in range(3)]
    for message in messages:
        message.ack()
    acquired = engine_models.ShareDelivery.objects.filter(state=engine_models.ShareDelivery.State.ACQUIRED)
    wait_for(lambda: not acquired.exists(), timeout=10)
    assert not engine_models.DeliveryAttempt.objects.filter(group_name="kombu.batched", outcome="expired").exists()
    assert queue.get() is None


def test_the_messages_of_a_consumer_killed_with_sigkill_come_back_when_the_lock_lapses(connect, agents):
    conn = connect(lock_duration_ms=1000)
    queue = declared(conn, "killed")
    publish(conn, queue, {"n": "orphan"})
    holder = agents("hold", "killed", "600", "1000")
    read_line(holder, "held")
    holder.send_signal(signal.SIGKILL)
    holder.wait(10)
    message = wait_for(queue.get, timeout=30)
    assert message.payload == {"n": "orphan"}
    assert message.delivery_info["redelivered"] is True
    message.ack()
    assert queue.get() is None


def test_the_share_group_shows_the_backlog_before_a_consumer_reads(connect):
    """One backlog: the queue's share group is made with its topic, so `groups describe` counts
    what was published before any consumer came."""
    from io import StringIO

    from django.core.management import call_command

    conn = connect()
    queue = declared(conn, "backlog")
    publish(conn, queue, *[{"n": n} for n in range(3)])
    out = StringIO()
    call_command("groups", "describe", "kombu.backlog", stdout=out)
    row = out.getvalue().splitlines()[1].split()
    assert row[:6] == ["kombu.backlog", "kombu.backlog", "0", "0", "3", "3"]  # group, topic, partition, start, end, lag
    queue.get()
    from queueing import selectors

    rows = selectors.share_group_partitions("kombu.backlog")
    assert sum(r.lag for r in rows) == 3


def test_no_connection_is_left_behind(connect):
    conn = connect()
    queue = declared(conn, "tidy")
    publish(conn, queue, {"n": 1})
    with Consumer(conn.default_channel, [queue], callbacks=[lambda body, message: message.ack()]):
        conn.drain_events(timeout=5)
    conn.release()

    def others():
        with django_connection.cursor() as cursor:
            cursor.execute("SELECT pid, application_name, backend_start, state, query FROM pg_stat_activity "
                           "WHERE datname = current_database() AND pid <> pg_backend_pid()")
            return cursor.fetchall()

    # A backend ends a moment after its client closed the connection: wait for it (bounded).
    deadline = time.monotonic() + 10
    while (left := others()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert left == []  # on failure, the sessions left behind and their last statements


def test_a_forked_child_leaves_the_parents_sessions_and_messages_alone(connect):
    """Guards the prefork pool: a child forked while the transport is live (Celery replacing a pool
    process) must not close the parent's sessions nor release what the parent holds."""
    conn = connect()
    queue = declared(conn, "forked")
    publish(conn, queue, {"n": 1}, {"n": 2})
    received = []
    with Consumer(conn.default_channel, [queue], callbacks=[lambda body, message: received.append(message)],
                  prefetch_count=1):
        conn.drain_events(timeout=5)
        pid = os.fork()
        if pid == 0:  # the child closes everything it inherited, as a pool process may, and exits
            try:
                conn.release()
                django_connection.close()
                gc.collect()
            finally:
                os._exit(0)
        assert os.waitpid(pid, 0)[1] == 0
        received[0].ack()  # the parent's session and its hold on the message are intact
        conn.drain_events(timeout=5)
        assert [m.payload for m in received] == [{"n": 1}, {"n": 2}]
        received[1].ack()
    assert queue.get() is None
    assert not engine_models.DeliveryAttempt.objects.filter(group_name="kombu.forked").exists()


def test_a_message_older_than_the_queues_message_ttl_is_dropped_unseen(connect):
    conn = connect()
    queue = declared(conn, "short-lived", message_ttl=0.5)
    publish(conn, queue, {"n": "stale"})
    published = time.monotonic()
    wait_for(lambda: time.monotonic() - published > 1.0)
    publish(conn, queue, {"n": "fresh"})
    assert queue.get().payload == {"n": "fresh"}
    assert queue.get() is None


def test_a_publish_inside_a_transaction_commits_or_rolls_back_with_it(connect):
    from django.db import transaction

    conn = connect()
    queue = declared(conn, "transactional")
    with pytest.raises(RuntimeError), transaction.atomic():
        publish(conn, queue, {"n": "rolled back"})
        raise RuntimeError("the business transaction fails")
    with transaction.atomic():
        publish(conn, queue, {"n": "committed"})
    assert queue.get().payload == {"n": "committed"}
    assert queue.get() is None


# Priorities: a message with a priority goes to its queue's band, and bands are read highest first.


def test_a_consumer_takes_the_highest_priority_first(connect):
    conn = connect()
    queue = declared(conn, "prio")
    for n, priority in enumerate([0, 5, 9, None, 3, 9]):
        publish(conn, queue, {"n": n, "priority": priority}, priority=priority)
    received = []
    with Consumer(conn.default_channel, [queue], callbacks=[lambda body, message: (received.append(body),
                                                                                    message.ack())],
                  prefetch_count=1):
        while len(received) < 6:
            conn.drain_events(timeout=10)
    # Highest first, and in publishing order within a priority (None is 0).
    assert [body["n"] for body in received] == [2, 5, 1, 4, 0, 3]
    assert kombu_store.bands("prio") == ["kombu-p9.prio", "kombu-p5.prio", "kombu-p3.prio", "kombu.prio"]


def test_priorities_are_clamped_to_kombus_range(connect):
    conn = connect()
    queue = declared(conn, "clamped")
    publish(conn, queue, {"n": "high"}, priority=200)
    publish(conn, queue, {"n": "low"}, priority=-3)
    publish(conn, queue, {"n": "nine"}, priority=9)
    assert engine_models.Topic.objects.filter(name__startswith="kombu-p").filter(
        name__endswith=".clamped").count() == 1
    assert [queue.get().payload["n"] for _ in range(3)] == ["high", "nine", "low"]


def test_a_band_made_after_the_consumer_started_is_polled(connect):
    conn, publisher = connect(), connect()
    queue = declared(conn, "late-band")
    publish(conn, queue, {"n": "plain"})
    received = []
    with Consumer(conn.default_channel, [queue], callbacks=[lambda body, message: (received.append(body),
                                                                                    message.ack())]):
        conn.drain_events(timeout=10)
        assert received == [{"n": "plain"}]
        publish(publisher, declared(publisher, "late-band"), {"n": "urgent"}, priority=7)
        django_connection.close()  # this thread's: the consumer's reads are its own
        deadline = time.monotonic() + 30
        while len(received) < 2 and time.monotonic() < deadline:
            try:
                conn.drain_events(timeout=1)
            except TimeoutError:
                pass
    assert received[1:] == [{"n": "urgent"}]
    assert engine_models.ShareGroupMember.objects.filter(
        group__name="kombu.late-band", client_id="kombu", topics__contains=["kombu-p7.late-band"]).exists()


def test_size_purge_delete_and_the_backlog_count_every_band(connect):
    from queueing import selectors

    conn = connect()
    queue = declared(conn, "banded")
    queue.get()  # the share group exists (a consumer came), before any band
    publish(conn, queue, {"n": 0}, {"n": 1})
    publish(conn, queue, {"n": 2}, priority=4)
    publish(conn, queue, {"n": 3}, {"n": 4}, priority=8)
    assert queue.queue_declare(passive=True).message_count == 5
    rows = selectors.share_group_partitions("kombu.banded")
    assert {r.topic for r in rows} == {"kombu.banded", "kombu-p4.banded", "kombu-p8.banded"}
    assert sum(r.lag for r in rows) == 5
    held = queue.get()
    assert held.payload == {"n": 3}
    assert queue.queue_declare(passive=True).message_count == 4
    later = (datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)).isoformat()
    publish(conn, queue, {"n": "eta"}, headers={"eta": later}, priority=4)
    assert queue.purge() == 5  # four ready, one waiting for its eta
    assert queue.queue_declare(passive=True).message_count == 0
    held.ack()
    assert queue.get() is None
    queue.delete()
    assert not engine_models.Topic.objects.filter(name__endswith=".banded").exists()
    assert not engine_models.ShareGroup.objects.filter(name="kombu.banded").exists()
