"""External brokers through kombu: publish outbox events to RabbitMQ (publisher confirms) and Redis.

publish() returns only once the broker took the message (RabbitMQ: its confirm; Redis: the reply
to the push), so the relay marks an event delivered only after that. Messages are CloudEvents in
structured mode: content type `application/cloudevents+json`, the envelope as the JSON body, the
CloudEvents id as the AMQP message_id and in the `ce_id` header.
"""
import json

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


class Publisher:
    """Keeps one kombu connection per broker URL; publish() blocks until the broker confirmed."""

    def __init__(self):
        self.connections = {}

    def _connection(self, destination):
        url = destination.url
        if url not in self.connections:
            options = {"confirm_publish": True} if destination.kind == destinations.AMQP else {}
            self.connections[url] = kombu.Connection(url, transport_options=options, connect_timeout=5)
        return self.connections[url]

    def publish(self, destination, envelope, headers):
        """Publish one envelope and wait for the broker's confirm; raise on any failure (the
        connection is then dropped, and the next publish opens a new one)."""
        conn = self._connection(destination)
        if destination.kind == destinations.AMQP:
            exchange = kombu.Exchange(destination.exchange, type=destination.exchange_type, durable=True)
            declare = [exchange]
            routing_key = destination.routing_key or envelope["type"]
        else:
            # kombu's Redis transport routes a direct exchange to the list of the bound queue.
            exchange = kombu.Exchange(destination.queue, type="direct", durable=True)
            declare = [kombu.Queue(destination.queue, exchange, routing_key=destination.queue)]
            routing_key = destination.queue
        try:
            # Fail fast when the broker is down: the relay's own back-off schedules the next try.
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=5)
            conn.Producer().publish(
                envelope, serializer=SERIALIZER, exchange=exchange, routing_key=routing_key, declare=declare,
                headers=headers, message_id=envelope["id"], type=envelope["type"], delivery_mode=2,
                retry=False, timeout=PUBLISH_TIMEOUT_S, confirm_timeout=PUBLISH_TIMEOUT_S,
            )
        except Exception as error:
            # kombu wraps a failed connect in its OperationalError; later drops surface as transport errors.
            unreachable = isinstance(error, (OSError, kombu.exceptions.OperationalError, *conn.connection_errors,
                                             *conn.recoverable_connection_errors))
            self.close(destination.url)
            if unreachable:
                # The broker, not this message: the relay defers the batch's other events for it.
                raise exceptions.BrokerUnavailable(broker=destination.label, reason=_describe(error)) from error
            raise

    def close(self, url=None):
        for key in [url] if url else list(self.connections):
            connection = self.connections.pop(key, None)
            if connection is not None:
                connection.release()


def _describe(error):
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
