"""External destinations of the relay, through kombu: RabbitMQ (with publisher confirms) and Redis.

Destinations: `amqp:EXCHANGE/ROUTING_KEY` (a durable topic exchange on the broker at AMQP_URL) and
`redis:QUEUE` (a list on the server at REDIS_URL). A publish returns only once the broker took the
message (RabbitMQ: its confirm), so the relay marks an event delivered only after that.
"""
import json
import os

import kombu

from outbox import exceptions

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"
REDIS_URL = "redis://127.0.0.1:6379/0"


def parse(destination):
    """Return (kind, url, exchange, routing key) for an external destination, or None for sluice:."""
    kind, _, rest = destination.partition(":")
    if kind == "amqp":
        exchange, _, routing_key = rest.partition("/")
        if not exchange:
            raise exceptions.InvalidDestination(destination=destination)
        return "amqp", os.environ.get("AMQP_URL", AMQP_URL), exchange, routing_key or exchange
    if kind == "redis":
        if not rest:
            raise exceptions.InvalidDestination(destination=destination)
        return "redis", os.environ.get("REDIS_URL", REDIS_URL), rest, rest
    return None


class Publisher:
    """Keeps one kombu connection per broker URL; publish() blocks until the broker confirmed."""

    def __init__(self):
        self.connections = {}

    def _connection(self, kind, url):
        if url not in self.connections:
            options = {"confirm_publish": True} if kind == "amqp" else {}
            self.connections[url] = kombu.Connection(url, transport_options=options, connect_timeout=5)
        return self.connections[url]

    def publish(self, destination, envelope, headers):
        kind, url, exchange_name, routing_key = parse(destination)
        conn = self._connection(kind, url)
        if kind == "amqp":
            exchange = kombu.Exchange(exchange_name, type="topic", durable=True)
            declare = [exchange]
        else:
            exchange = kombu.Exchange(exchange_name, type="direct", durable=True)
            declare = [kombu.Queue(exchange_name, exchange, routing_key=routing_key)]
        try:
            # Fail fast when the broker is down: the relay's own back-off schedules the next try.
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=5)
            producer = conn.Producer()
            producer.publish(
                json.dumps(envelope), exchange=exchange, routing_key=routing_key, declare=declare,
                content_type="application/cloudevents+json", content_encoding="utf-8",
                headers=headers, message_id=envelope["id"], delivery_mode=2, retry=False,
            )
        except Exception:
            self.close(url)
            raise

    def close(self, url=None):
        for key in [url] if url else list(self.connections):
            connection = self.connections.pop(key, None)
            if connection is not None:
                connection.release()
