"""A kombu transport on Sluice: `broker_url = "sluice://"` (the Django database) or
`"sluice+postgresql://user@host/db"` runs an unchanged Celery app on the engine.

A queue is a topic read by a share group of the same name; a delivered message is a record held
with a lock that a side thread renews while the consumer keeps it unacknowledged; ack accepts it,
reject dead-letters it, requeue releases it; a consumer killed outright loses nothing, as its locks
run out in the database. Bindings are a table every process reads; a message with a future eta
waits in the database as a delayed record. A message with a priority (0-9, higher first) goes to a
band of its queue, another topic read by the same group, highest band first. Consumers sleep on
LISTEN until a commit wakes them. In Celery's event loop (a worker's hub) a thread of the transport
reads and hands what it took to the loop, so that the loop never waits on the database.
"""
import logging
import os
import socket
import threading
import time
from queue import Empty
from urllib.parse import urlsplit

import psycopg
from django.db import InterfaceError, OperationalError
from kombu.transport import TRANSPORT_ALIASES, virtual
from kombu.transport.base import to_rabbitmq_queue_arguments
from kombu.transport.virtual.exchange import STANDARD_EXCHANGE_TYPES

from scheduler.compat import forks

logger = logging.getLogger("sluice.kombu")

ALIAS = "sluice"
TRANSPORT_PATH = "scheduler.compat.kombu_transport:Transport"
SLUICE_SETTINGS = "config.settings"  # a program outside the Sluice project runs on these
DEFAULT_BATCH = 100  # messages taken per queue and poll when no prefetch limits it
FULL_WAIT_S = 0.25  # prefetch full: how long to wait for an acknowledgement before looking again
# A queue found empty is read again after this (the pidbox queue of a busy worker, whose asks for
# NOTIFYs are withdrawn), or at the first read after a NOTIFY or a sleep.
IDLE_READ_S = FULL_WAIT_S
# The event loop's reads wait for three quarters of a prefetch's room, so that one statement takes
# several messages while a quarter still waits in the worker for its processes; past this without an
# acknowledgement they take the room there is (a task that holds its message for long, with
# acks_late).
ROOM_WAIT_S = 0.005


def _enough(prefetch):
    """The room the event loop's reads wait for: three quarters of the prefetch, leaving at least
    one message held (see ROOM_WAIT_S). Half, as before, cost a third more statements a message."""
    return max(1, prefetch - max(1, prefetch // 4))


def register():
    """Make `sluice://` and `sluice+postgresql://...` broker URLs resolve to this transport."""
    TRANSPORT_ALIASES[ALIAS] = TRANSPORT_PATH


register()


def _store(url):
    """Set Django up if it is not (see ensure_django), then return the store."""
    ensure_django(url)
    from scheduler.compat import kombu_store

    return kombu_store


def ensure_django(url):
    """Set Django up if it is not (a program outside the Sluice project).

    A `postgres(ql)://` URL with Django not configured runs Sluice's own settings module against
    that database (DATABASE_URL is set to it in this process); `sluice://` uses the settings the
    process has.
    """
    import django
    from django.apps import apps
    from django.conf import settings

    if url.startswith(("postgres://", "postgresql://")):
        if settings.configured:
            name = urlsplit(url).path.lstrip("/")
            if name and name != settings.DATABASES["default"]["NAME"]:
                logger.warning("sluice+%s: Django is configured already, so its own database (%s) is used", url,
                               settings.DATABASES["default"]["NAME"])
        else:
            os.environ["DATABASE_URL"] = url
            os.environ.setdefault("DJANGO_SETTINGS_MODULE", SLUICE_SETTINGS)
    if not apps.ready:
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", SLUICE_SETTINGS)
        django.setup()
        if settings.SETTINGS_MODULE == SLUICE_SETTINGS:
            _log_through_the_program(settings.LOGGING)


def _log_through_the_program(logging_settings):
    """Sluice's settings set up here, in a program of its own (a Celery worker, a script): their
    loggers hand their lines to the program's logging (Celery's worker log, say) instead of writing
    them to the stream they found, which a Celery worker has already redirected into its log at
    WARNING, so that every line came out formatted twice."""
    for name in logging_settings.get("loggers", {}):
        configured = logging.getLogger(name)
        for handler in list(configured.handlers):
            configured.removeHandler(handler)
        configured.propagate = True


class QoS(virtual.QoS):
    """kombu's prefetch accounting, with acknowledgements made in the database (from any thread)
    and unacknowledged messages released there on a clean close (none are re-published)."""

    def ack(self, delivery_tag):
        self.channel.settle(delivery_tag, "accept")
        super().ack(delivery_tag)

    def reject(self, delivery_tag, requeue=False):
        self.channel.settle(delivery_tag, "release" if requeue else "reject")
        self._quick_ack(delivery_tag)

    def restore_unacked(self):
        self._flush()
        self.channel.release_held()  # those delivered, and those taken on their way to the event loop
        self._delivered.clear()
        return []


class Channel(virtual.Channel):
    QoS = QoS
    supports_fanout = True
    exchange_types = dict(STANDARD_EXCHANGE_TYPES)
    from_transport_options = virtual.Channel.from_transport_options + ("lock_duration_ms", "partitions",
                                                                       "durable_polls")
    lock_duration_ms = None  # None: the share group's (SLUICE_LOCK_DURATION_MS when it is created)
    # False: an acquisition, and the acknowledgements sent with it, commit without waiting for the WAL
    # flush; a server crash may deliver those messages again, as RabbitMQ may after its own crash.
    durable_polls = False
    partitions = None  # of a queue's topic when it is created; None: one (first in, first out, as RabbitMQ)

    def __init__(self, connection, **kwargs):
        super().__init__(connection, **kwargs)
        self.store = connection.store
        self._pid = os.getpid()
        self._readers = {}  # queue -> kombu_store.Reader
        self._no_ack = set()  # queues consumed without acknowledgements
        self._held = {}  # delivery tag -> (reader, record), until settled
        self._accepted = []  # (reader, record) acknowledged, to be accepted in the database by flush_accepts
        self._found_empty = {}  # queue -> when a read last found it empty (time.monotonic())
        self._turn = 0  # which consumed queue deliver_ready reads first
        self._held_lock = threading.Lock()

    # Queues and bindings -------------------------------------------------------------------

    def prepare_queue_arguments(self, arguments, **kwargs):
        # As AMQP spells them (x-expires, x-message-ttl), so that _new_queue gets expires and TTLs.
        return to_rabbitmq_queue_arguments(arguments, **kwargs)

    def _new_queue(self, queue, **kwargs):
        self.store.declare_queue(queue, arguments=kwargs.get("arguments"), partitions=self.partitions)

    def _has_queue(self, queue, **kwargs):
        return self.store.has_queue(queue)

    def _size(self, queue):
        return self.store.size(queue)

    def _purge(self, queue):
        return self.store.purge(queue)

    def queue_delete(self, queue, if_unused=False, if_empty=False, **kwargs):
        if if_empty and self._size(queue):
            return
        self.store.delete_queue(queue)
        self.state.queue_bindings_delete(queue)

    def _queue_bind(self, exchange, routing_key, pattern, queue):
        self.store.bind(exchange, self.state.exchanges[exchange]["type"], routing_key, pattern, queue)

    def queue_unbind(self, queue, exchange=None, routing_key="", arguments=None, **kwargs):
        super().queue_unbind(queue, exchange, routing_key, arguments, **kwargs)
        self.store.unbind(exchange, routing_key, queue)

    def exchange_declare(self, exchange=None, type="direct", durable=False, auto_delete=False, arguments=None,
                         nowait=False, passive=False):
        if passive and exchange not in self.state.exchanges and self.store.exchange_type(exchange):
            return  # declared (bound) by another process
        return super().exchange_declare(exchange, type, durable, auto_delete, arguments, nowait, passive)

    def exchange_delete(self, exchange, if_unused=False, nowait=False):
        super().exchange_delete(exchange, if_unused, nowait)
        self.store.delete_exchange(exchange)

    def get_table(self, exchange):
        return self.store.table(exchange)

    def typeof(self, exchange, default="direct"):
        kind = self.state.exchanges.get(exchange, {}).get("type") or self.store.exchange_type(exchange) or default
        return self.exchange_types[kind]

    # Publishing ----------------------------------------------------------------------------

    def _put(self, queue, message, **kwargs):
        self.store.publish([queue], message)

    def _put_fanout(self, exchange, message, routing_key, **kwargs):
        queues = sorted({queue for _, _, queue in self.get_table(exchange)})
        if queues:
            self.store.publish(queues, message)

    # Consuming -----------------------------------------------------------------------------

    def _reader(self, queue):
        reader = self._readers.get(queue)
        if reader is None:
            reader = self._readers[queue] = self.store.Reader(queue, lock_ms=self.lock_duration_ms,
                                                              batch=DEFAULT_BATCH, durable_polls=self.durable_polls)
            self.connection.watch(reader)
        return reader

    def basic_consume(self, queue, no_ack, callback, consumer_tag, **kwargs):
        self._reader(queue)
        if no_ack:
            self._no_ack.add(queue)
        else:
            self._no_ack.discard(queue)
            self.connection.move_delayed()
        return super().basic_consume(queue, no_ack, callback, consumer_tag, **kwargs)

    def basic_get(self, queue, no_ack=False, **kwargs):
        message = super().basic_get(queue, no_ack=no_ack, **kwargs)
        if message is not None and no_ack:
            self.settle(message.delivery_tag, "accept")
        return message

    def _get(self, queue, timeout=None):
        taken = self._take(queue, 1, look_for_bands=True)  # basic_get: a single read, so the bands are read too
        if not taken:
            raise Empty()
        return taken[0][1]

    def _take(self, queue, limit, look_for_bands=False):
        reader = self._reader(queue)
        if reader.refresh_bands(force=look_for_bands):
            self.connection.watch(reader)  # a new band: its commits wake this consumer too
        riding = self.flush_accepts(riding=reader)
        taken = reader.take(limit)
        if riding:
            reader.consumer.flush()  # acceptances of partitions the acquisition did not reach (none, mostly)
        with self._held_lock:
            for record, payload in taken:
                self._held[payload["properties"]["delivery_tag"]] = (reader, record)
        return taken

    def room(self):
        """How many more messages the consumers may hold (None: no prefetch). Counted from the held
        messages, which include those taken and not yet handed to the event loop, so the fetching
        thread never takes more than the prefetch."""
        limit = self.qos.prefetch_count
        if not limit:
            return None
        with self._held_lock:
            return max(0, limit - len(self._held))

    def _room_opens(self):
        """Whether the acknowledgement just made (the held lock taken) changed what the fetching
        thread waits for: the first room in a full prefetch, or enough of it free (_enough). The
        others would wake it only to find it must go on waiting."""
        limit = self.qos.prefetch_count
        if not limit:
            return True
        return limit - len(self._held) in (1, _enough(limit))

    def can_take(self, enough=False):
        """Whether the consumers may take messages now; with enough, only once _enough of the prefetch
        is free."""
        if not self._consumers:
            return False
        room = self.room()
        return room is None or room >= (_enough(self.qos.prefetch_count) if enough else 1)

    def deliver_ready(self, *, force, enough=False):
        """Acquire what the consumed queues have ready, within the prefetch (enough: see can_take), and
        hand it to their consumers; return how many messages were delivered. A queue found empty less
        than IDLE_READ_S ago is read only if force. Queues take turns at going first."""
        delivered = 0
        now = time.monotonic()
        queues = list(dict.fromkeys(self._active_queues))
        self._turn += 1
        first = self._turn % len(queues) if queues else 0
        for queue in queues[first:] + queues[:first]:
            if not self.can_take(enough):
                break
            if not force and now - self._found_empty.get(queue, now - IDLE_READ_S) < IDLE_READ_S:
                continue
            taken = self._take(queue, self.room() or DEFAULT_BATCH)
            if not taken:
                self._found_empty[queue] = now
                continue
            self._found_empty.pop(queue, None)
            if queue in self._no_ack:
                self._settle_now([payload["properties"]["delivery_tag"] for _, payload in taken])
            self.connection.hand_over(queue, [payload for _, payload in taken])
            delivered += len(taken)
        return delivered

    def release_held(self):
        """Release every message held, in the database (a clean close)."""
        with self._held_lock:
            tags = list(self._held)
        for tag in tags:
            self.settle(tag, "release")

    def _settle_now(self, tags):
        with self._held_lock:
            held = [self._held.pop(tag) for tag in tags]
        by_reader = {}
        for reader, record in held:
            by_reader.setdefault(reader, []).append(record)
        for reader, records in by_reader.items():
            reader.accept_now(records)

    def settle(self, delivery_tag, fate):
        """Release or reject a held message in the database now, or accept it with the next
        flush_accepts (any thread may ack). An acknowledgement is accepted in a batch with the others
        made meanwhile: flushed before each acquisition, on close, and by the renewing thread at every
        turn (a third of the lock), so the lock never lapses first."""
        with self._held_lock:
            held = self._held.pop(delivery_tag, None)
            if held is not None and fate == "accept" and os.getpid() == self._pid:
                self._accepted.append(held)
                held = None
                accepted = True
                wake = self._room_opens()
            else:
                accepted = False
        if accepted:
            transport = self.connection
            if transport is not None and wake:
                transport.acked.set()
            return
        if held is None or os.getpid() != self._pid:
            return  # settled already, or this is a forked child: the parent holds the message
        reader, record = held
        if not reader.settle(record, fate):
            logger.warning("kombu queue %s: %s refused, the lock was lost; the message is delivered again",
                           reader.queue, fate, extra={"queue": reader.queue, "offset": record.offset})
        transport = self.connection  # None once the channel is closed
        if transport is not None:
            transport.acked.set()

    def flush_accepts(self, riding=None):
        """Accept in the database the messages acknowledged since the last flush, in one statement
        per queue; a refusal (the lock was lost) is logged, the message being delivered again. Those
        of riding (the reader about to acquire, in this thread) go with its acquisition's statement;
        return whether there were any."""
        with self._held_lock:
            accepted, self._accepted = self._accepted, []
        if not accepted or os.getpid() != self._pid:
            return False
        by_reader = {}
        staged = False
        for reader, record in accepted:
            by_reader.setdefault(reader, []).append(record)
        for reader, records in by_reader.items():
            if reader is riding:
                for record in records:
                    reader.consumer.accept(record)  # sent by the poll that follows (refusals logged there)
                staged = True
                continue
            refused = reader.consumer.accept_now(records)
            if refused:
                logger.warning("kombu queue %s: %d acknowledgement(s) refused, the lock was lost; those messages "
                               "are delivered again", reader.queue, len(refused), extra={"queue": reader.queue})
        return staged

    def renew_held(self):
        """Extend the locks of every message held unacknowledged (the renewing thread calls this)."""
        with self._held_lock:
            held = list(self._held.values())
        by_reader = {}
        for reader, record in held:
            by_reader.setdefault(reader, []).append(record)
        for reader, records in by_reader.items():
            lost = reader.renew(records)
            if lost:
                # Settled since the snapshot (an ack from another thread) is not lost.
                with self._held_lock:
                    still_held = {id(record) for _, record in self._held.values()}
                lost = [record for record in lost if id(record) in still_held]
            if lost:
                logger.warning("kombu queue %s: %d lock(s) lost before renewal; those messages are delivered again",
                               reader.queue, len(lost), extra={"queue": reader.queue})
        for reader in list(self._readers.values()):
            reader.heartbeat()

    def consumed_queues(self):
        return set(self._active_queues)

    def close(self):
        if self.closed:
            return
        if os.getpid() != self._pid:  # a forked child: the messages and the sessions are the parent's
            super().close()
            self._readers.clear()
            return
        with self.connection.reading:  # not while the Fetcher reads this channel's queues
            readers = list(self._readers.values())
            self.flush_accepts()
            super().close()  # cancels consumers and releases what is unacknowledged (QoS.restore_unacked)
            for reader in readers:
                reader.close()
            self._readers.clear()


class Renewer(threading.Thread):
    """Renews the locks of held messages, heartbeats the share-group members and keeps consumed
    queues from expiring, every third of the lock duration (at most every 3 s), on its own
    connection; it ends with the transport's connection. Killed with its process, it renews nothing
    more and the locks run out."""

    def __init__(self, transport):
        super().__init__(name="sluice-kombu-renewer", daemon=True)
        self.transport = transport
        self.stop_event = threading.Event()

    def interval(self):
        """A third of the shortest lock held by this process's readers (their group's, once joined)."""
        locks = [reader.lock_ms for channel in list(self.transport.channels)
                 for reader in list(channel._readers.values())]
        return min([3.0, *(lock / 3000 for lock in locks)])

    def run(self):
        from django.db import connection

        try:
            while not self.stop_event.wait(self.interval()):
                try:
                    self.renew_once()
                except (OperationalError, InterfaceError, psycopg.OperationalError) as error:
                    logger.warning("kombu lock renewal failed (%s); retrying", error)
                    connection.close()
                except Exception:
                    # Renewal must go on while the process lives, or its long tasks run twice.
                    logger.exception("kombu lock renewal failed; retrying")
        finally:
            connection.close()

    def renew_once(self):
        queues = set()
        for channel in list(self.transport.channels):
            channel.flush_accepts()
            channel.renew_held()
            queues |= channel.consumed_queues()
        self.transport.store.touch_queues(queues)
        self.transport.store.expire_queues()

    def stop(self):
        self.stop_event.set()


class Fetcher(threading.Thread):
    """Reads for Celery's event loop (a worker's hub), which then never waits on the database: takes
    what the consumed queues have ready within their prefetches, on a connection of its own, hands it
    to the loop, and between reads sleeps on LISTEN or waits for acknowledgements (Transport.fetch).
    An error ends it and is raised in the loop, where Celery handles it as one from drain_events."""

    def __init__(self, transport):
        super().__init__(name="sluice-kombu-fetcher", daemon=True)
        self.transport = transport
        self.stop_event = threading.Event()

    def run(self):
        from django.db import connection

        try:
            self.transport.fetch(self.stop_event)
        except Exception as error:
            if not self.stop_event.is_set():
                self.transport.raise_in_loop(error)
        finally:
            connection.close()

    def stop(self):
        self.stop_event.set()


class Transport(virtual.Transport):
    """The Sluice transport (`sluice://`). Transport options: `lock_duration_ms` (how long a
    delivered message is held before another consumer may get it, renewed while held),
    `partitions` (of the topics it creates), `move_delayed` (default True: a consuming process also
    moves due delayed records into the log, as `manage.py delayed run` does), `durable_polls`
    (default False: see Channel.durable_polls)."""

    Channel = Channel
    driver_type = "sluice"  # not "sql": Celery disables events for that one
    driver_name = "sluice"
    can_parse_url = True  # the URL is the database's (or Django's): kombu must not split it
    polling_interval = None  # drain_events waits on LISTEN, not by sleeping
    connection_errors = virtual.Transport.connection_errors + (
        OperationalError, InterfaceError, psycopg.OperationalError)
    implements = virtual.Transport.implements.extend(
        asynchronous=True, exchange_type=frozenset(["direct", "topic", "fanout"]), heartbeats=False,
    )

    def __init__(self, client, **kwargs):
        super().__init__(client, **kwargs)
        self.store = None
        self.acked = threading.Event()  # set when a message is settled: prefetch room may have opened
        self._pid = os.getpid()
        self._listener = None
        self._waiter = None
        self._channels_listened = set()
        self._keys = frozenset()
        self._renewer = None
        self._mover = None
        self._mover_thread = None
        self._loop = None  # Celery's event loop, once registered with it
        self._fetcher = None
        self.reading = threading.RLock()  # held by a read (_read), which a channel's close waits for
        self._watch_lock = threading.Lock()
        forks.forget_connections_in_children()

    def establish_connection(self):
        self.store = _store(self._database_url())
        from django.db import connection

        # After a lost database (Celery reconnects on connection_errors) the thread's Django
        # connection is broken: drop it so the next query opens a new one. Not inside the caller's
        # transaction.atomic() (a first publish from inside one): Django would close the
        # connection for its autocommit being off, and the transaction with it.
        if not connection.in_atomic_block:
            connection.close_if_unusable_or_obsolete()
        return super().establish_connection()

    def _database_url(self):
        hostname = self.client.hostname or ""
        return hostname if hostname.startswith(("postgres://", "postgresql://")) else ""

    def driver_version(self):
        return "1"

    def verify_connection(self, connection):
        return True

    def watch(self, reader):
        """Wait for reader's topics (its queue's bands) too, and start renewing the locks of what this
        process holds."""
        with self._watch_lock:
            self._keys = self._keys | reader.wakeup_keys
            for topic_id in sorted(reader.topic_ids):
                channel = f"sluice_t{topic_id}"
                if (self._listener is not None and not self._listener.closed
                        and channel not in self._channels_listened):
                    self._listener.execute(f'LISTEN "{channel}"')
                self._channels_listened.add(channel)
            if self._renewer is None:
                self._renewer = Renewer(self)
                self._renewer.start()

    def move_delayed(self):
        """Start moving due delayed records (eta messages) into the log from this process, unless the
        transport option move_delayed is False (then `manage.py delayed run` must run somewhere).
        Consumers that acknowledge start it: workers, not the clients reading a pidbox reply."""
        with self._watch_lock:
            if self._mover is not None or not self.client.transport_options.get("move_delayed", True):
                return
            from queueing import delayed

            self._mover = delayed.Mover()
            self._mover_thread = threading.Thread(target=self._mover.run, name="sluice-kombu-mover", daemon=True)
            self._mover_thread.start()

    # Waiting ------------------------------------------------------------------------------

    def drain_events(self, connection, timeout=None):
        """Deliver what is ready on any channel; with nothing ready, sleep until a commit may have
        brought something (LISTEN/NOTIFY through the engine's wake-ups), or until timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        fallback = self._fallback_s()
        force = True
        while True:
            self._ensure_listener()
            if self._read(force=force):
                return
            remaining = fallback if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                raise socket.timeout()
            force, _ = self._wait(min(remaining, fallback))

    def fetch(self, stop):
        """Read for the event loop until stop is set (the Fetcher's loop): as drain_events, with the
        reads made once enough of a prefetch is free (_enough)."""
        fallback = self._fallback_s()
        force = enough = True
        while not stop.is_set():
            self._ensure_listener()
            if self._short(enough):
                # No consumer may take yet: wait for an acknowledgement, without a read (the NOTIFYs
                # that come meanwhile wait on the connection for the next one, and force it).
                _, enough = self._wait(fallback, enough=enough)
                continue
            if self._read(force=force, enough=enough):
                force, enough = False, True
                continue
            force, enough = self._wait(fallback, enough=True)

    def _read(self, *, force, enough=False):
        """Take the NOTIFYs that came, then deliver what every channel has ready (a NOTIFY forces the
        reads of queues found empty just before); return how many messages."""
        from queueing import wakeups

        if self._waiter is None:
            self._waiter = wakeups.Waiter(wakeups.APPENDS, f"kombu transport {os.getpid()}")
        force = self._waiter.drain(self._listen) or force
        self.acked.clear()
        with self.reading:
            delivered = sum(channel.deliver_ready(force=force, enough=enough) for channel in list(self.channels))
        self._waiter.found(self._listener, delivered)
        return delivered

    def _short(self, enough):
        """Whether every consuming channel's prefetch is short of the room a read waits for (see
        Channel.can_take); acknowledgements made from here on set acked."""
        self.acked.clear()
        consuming = [c for c in list(self.channels) if c._consumers]
        return bool(consuming) and not any(c.can_take(enough) for c in consuming)

    def _wait(self, seconds, enough=False):
        """Wait until the next read may find something, up to seconds; return (force, enough) for that
        read: force after a sleep on LISTEN; enough unless a prefetch short of enough room waited for
        an acknowledgement in vain (the read then takes the room there is)."""
        consuming = [c for c in list(self.channels) if c._consumers]
        short = [c for c in consuming if not c.can_take(enough)]
        if short:
            # A prefetch is full: what frees it is an acknowledgement (often from another thread),
            # not a commit; look again when one comes.
            some_room = any(c.can_take() for c in short)
            return False, self.acked.wait(min(seconds, ROOM_WAIT_S if some_room else FULL_WAIT_S))
        if consuming:
            self._waiter.sleep(self._listener, self._keys, seconds, self._listen)
        else:
            self.acked.wait(seconds)
        return True, enough

    def hand_over(self, queue, payloads):
        """Deliver messages taken from queue to its consumer: at once, or through the event loop when
        the Fetcher took them."""
        loop = self._loop
        if threading.current_thread() is not self._fetcher:
            self._deliver_all(queue, payloads)
        elif loop is not None:  # else the transport is closing: the channel releases what it holds
            loop.call_soon(self._deliver_all, queue, payloads)

    def _deliver_all(self, queue, payloads):
        for payload in payloads:
            self._deliver(payload, queue)

    # Celery's event loop ------------------------------------------------------------------

    def register_with_event_loop(self, connection, loop):
        """Serve Celery's event loop (a worker's hub) from a Fetcher, started at the loop's first turn
        (Celery's start-up steps drain_events in this thread before). With drain_events instead,
        Celery's worker runs its blocking loop, in which its prefork pool takes a task only once a
        process is free, so every process waits for each task's hand-over."""
        self._loop = loop
        loop.call_soon(self._start_fetcher)

    def _start_fetcher(self):
        if self._loop is not None and self._fetcher is None:
            self._fetcher = Fetcher(self)
            self._fetcher.start()

    def raise_in_loop(self, error):
        """Raise error in the event loop's thread, where Celery handles it (reconnects after a
        connection error) as it would from drain_events."""
        def throw():
            raise error

        loop = self._loop
        if loop is not None:
            loop.call_soon(throw)

    def _fallback_s(self):
        from django.conf import settings

        return settings.SLUICE["POLL_FALLBACK_MS"] / 1000

    def _ensure_listener(self):
        if (self._listener is None or self._listener.closed) and self._channels_listened:
            from queueing import wakeups  # here, not at every turn of the Fetcher's loop

            try:
                with self._watch_lock:
                    self._listener = wakeups.listen_connection(sorted(self._channels_listened))
            except psycopg.Error as error:
                logger.warning("LISTEN connection failed (%s); polling", error)

    def _listen(self, seconds):
        """Wait for a NOTIFY up to seconds (0: take those already here); return whether one came. A
        lost LISTEN connection is opened again. In slices, so that the Fetcher's stop ends the sleep
        at once however long the fallback (closing the transport waits for the Fetcher)."""
        from queueing import wakeups

        deadline = time.monotonic() + seconds
        while True:
            if self._listener is None or self._listener.closed:
                # Polling: an acknowledgement ends the wait (acked), as does a close (it sets acked).
                return wakeups.heard(self._listener, max(0.0, deadline - time.monotonic()), idle=self.acked.wait,
                                     who="kombu transport")
            came = wakeups.heard(self._listener, min(max(0.0, deadline - time.monotonic()), wakeups.STOP_SLICE_S),
                                 who="kombu transport")
            fetcher = self._fetcher
            if came or time.monotonic() >= deadline or (fetcher is not None and fetcher.stop_event.is_set()):
                return came

    # Closing ------------------------------------------------------------------------------

    def close_connection(self, connection):
        if os.getpid() != self._pid:
            # A forked child (a prefork pool process): everything here is the parent's.
            self.channels.clear()
            self._avail_channels.clear()
            return
        for thread in (self._renewer, self._mover, self._fetcher):
            if thread is not None:
                thread.stop()
        if self._fetcher is not None:
            self.acked.set()  # ends a wait for acknowledgements; a sleep on LISTEN ends within a slice
            self._fetcher.join(self._fallback_s() + 5)
        self._loop = None
        try:
            super().close_connection(connection)
        except self.connection_errors as error:
            # The database is gone: what this process held comes back when its locks run out.
            logger.warning("kombu connection closed without releasing its messages (%s)", error)
        if self._renewer is not None:
            self._renewer.join(5)
        if self._mover_thread is not None:
            self._mover_thread.join(5)
        if self._listener is not None:
            self._listener.close()
