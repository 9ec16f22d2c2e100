"""External brokers through kombu: publish outbox events to RabbitMQ (publisher confirms) and Redis.

publish_many() returns only once the broker took or refused each message (RabbitMQ: its publisher
confirm, awaited for a whole window at once; Redis: the reply to each push), so the relay marks an
event delivered only after that. Messages are CloudEvents in
structured mode: content type `application/cloudevents+json`, the envelope as the JSON body, the
CloudEvents id as the AMQP message_id and in the `ce_id` header.
"""
import functools
import json
import time

import kombu
import kombu.exceptions
import kombu.serialization

from outbox import destinations, exceptions

CONTENT_TYPE = "application/cloudevents+json"
SERIALIZER = "cloudevents"
PUBLISH_TIMEOUT_S = 10

# Registered on import, so kombu consumers in this process decode the body to a dict (inbox.py
# imports this module) and producers can name the serializer.
kombu.serialization.register(SERIALIZER, lambda body: json.dumps(body, separators=(",", ":")), json.loads,
                             content_type=CONTENT_TYPE, content_encoding="utf-8")


class _Confirms:
    """Publisher confirms on one AMQP channel: delivery tags are counted from confirm_select, and
    the broker acks or nacks them, one by one or up to a tag at once (multiple)."""

    def __init__(self, channel):
        self.sent = 0
        self.outcomes = {}  # tag -> True (ack) or False (nack), until read
        self.waiting = set()
        channel.confirm_select()
        channel.events["basic_ack"].add(lambda tag, multiple: self._settle(tag, multiple, True))
        channel.events["basic_nack"].add(lambda tag, multiple: self._settle(tag, multiple, False))

    def next_tag(self):
        self.sent += 1
        self.waiting.add(self.sent)
        return self.sent

    def _settle(self, tag, multiple, ok):
        for settled in [t for t in self.waiting if t <= tag] if multiple else [tag]:
            self.waiting.discard(settled)
            self.outcomes[settled] = ok


class Publisher:
    """Keeps one kombu connection per broker URL; publish_many() returns once the broker confirmed
    or refused every message it was given."""

    def __init__(self):
        self.connections = {}

    def _connection(self, destination):
        url = destination.url
        if url not in self.connections:
            self.connections[url] = kombu.Connection(url, connect_timeout=5)
        return self.connections[url]

    def publish_many(self, messages):
        """Publish [(destination, envelope, headers)], all on one broker, and return an error or None
        for each once the broker took or refused it. To RabbitMQ they go out as one window on a
        channel in confirm mode, and the confirms are awaited together: one round trip, not one
        per message. Raises BrokerUnavailable if the broker cannot be reached or the connection
        fails before every message is settled (the connection is then dropped, and the next call
        opens a new one); what was not settled must be taken as not delivered.
        """
        first = messages[0][0]
        conn = self._connection(first)
        try:
            # Fail fast when the broker is down: the relay's own back-off schedules the next try.
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=5)
            if first.kind == destinations.AMQP:
                return self._publish_amqp(conn, messages)
            producer = kombu.Producer(conn.default_channel)
            return [self._try(conn, producer, message) for message in messages]
        except Exception as error:
            # kombu wraps a failed connect in its OperationalError; later drops surface as transport errors.
            self.close(first.url)
            if isinstance(error, (kombu.exceptions.OperationalError, *_connection_errors(conn))):
                raise exceptions.BrokerUnavailable(broker=first.label, reason=_describe(error)) from error
            raise

    def _publish_amqp(self, conn, messages):
        channel = conn.default_channel
        confirms = getattr(channel, "_sluice_confirms", None)
        if confirms is None:  # a channel kombu opened anew (after a channel error, say) starts over
            confirms = channel._sluice_confirms = _Confirms(channel)
        sent, errors, producer = {}, [None] * len(messages), kombu.Producer(channel)
        for index, message in enumerate(messages):
            errors[index] = self._try(conn, producer, message)
            if errors[index] is None:
                sent[confirms.next_tag()] = index
        deadline = time.monotonic() + PUBLISH_TIMEOUT_S
        while confirms.waiting and channel.is_open:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no confirm from the broker within {PUBLISH_TIMEOUT_S}s")
            conn.drain_events(timeout=remaining)
        for tag, index in sent.items():
            outcome = confirms.outcomes.pop(tag, None)
            if outcome is None:
                # The channel closed (a channel error on another message) before this one was
                # confirmed: it may or may not have been taken, so it counts as not delivered.
                errors[index] = exceptions.BrokerUnavailable(broker=messages[index][0].label,
                                                             reason="channel closed before the confirm")
            elif not outcome:
                errors[index] = exceptions.MessageNacked(broker=messages[index][0].label)
        if not channel.is_open:
            self.close(messages[0][0].url)
        return errors

    def _try(self, conn, producer, message):
        """Send one message; return its error, unless the connection failed (raised)."""
        try:
            self._send(producer, *message)
        except _connection_errors(conn):
            raise
        except Exception as error:  # noqa: BLE001 - one bad message must not stop the others
            return error
        return None

    @staticmethod
    def _send(producer, destination, envelope, headers):
        """Send one message; to Redis this returns once the server replied."""
        exchange, declare = _entities(destination)
        routing_key = (destination.routing_key or envelope["type"]) if destination.kind == destinations.AMQP \
            else destination.queue
        producer.publish(
            envelope, serializer=SERIALIZER, exchange=exchange, routing_key=routing_key, declare=declare,
            headers=headers, message_id=envelope["id"], type=envelope["type"], delivery_mode=2,
            retry=False, timeout=PUBLISH_TIMEOUT_S,
        )

    def close(self, url=None):
        for key in [url] if url else list(self.connections):
            connection = self.connections.pop(key, None)
            if connection is not None:
                connection.release()


@functools.lru_cache(maxsize=256)
def _entities(destination):
    """The kombu exchange a destination publishes to, and what to declare (once per channel)."""
    if destination.kind == destinations.AMQP:
        exchange = kombu.Exchange(destination.exchange, type=destination.exchange_type, durable=True)
        return exchange, (exchange,)
    # kombu's Redis transport routes a direct exchange to the list of the bound queue.
    exchange = kombu.Exchange(destination.queue, type="direct", durable=True)
    return exchange, (kombu.Queue(destination.queue, exchange, routing_key=destination.queue),)


def _connection_errors(conn):
    """What a failed connection to the broker raises (as opposed to one bad message)."""
    return (OSError, *conn.connection_errors, *conn.recoverable_connection_errors)


def _describe(error):
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
