"""Where the relay delivers an outbox event: parse destination strings and named destinations.

Forms (an event stores the string as given, and the relay resolves it at each delivery, so a
changed setting redirects events still waiting):

- `sluice:TOPIC`                  a Sluice topic in this database (exactly once)
- `amqp:EXCHANGE[/ROUTING_KEY]`   a durable topic exchange on the broker at AMQP_URL
- `amqp://USER:PASS@HOST:PORT/VHOST?exchange=X[&routing_key=K][&exchange_type=topic]` (also
  `amqps://`): the same on a broker named inline
- `redis:QUEUE`                   a kombu queue (a Redis list) on the server at REDIS_URL
- `redis://HOST:PORT/DB?queue=Q` (also `rediss://`): the same on a server named inline
- `NAME`                          a key of settings.SLUICE_OUTBOX_DESTINATIONS, whose value is one
  of the forms above; keeps credentials out of the outbox table

Without a routing key, an AMQP event is routed by its event type (`order.paid`).
"""
import dataclasses
import os
import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from django.conf import settings

from outbox import exceptions

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"
REDIS_URL = "redis://127.0.0.1:6379/0"
SLUICE, AMQP, REDIS = "sluice", "amqp", "redis"
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
_EXCHANGE_TYPES = ("topic", "direct", "fanout", "headers")
_AMQP_SCHEMES = ("amqp", "amqps", "pyamqp")
_REDIS_SCHEMES = ("redis", "rediss")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Destination:
    """A resolved destination. topic for Sluice; url, exchange, routing key (None: the event type)
    and queue (Redis) for brokers."""

    kind: str
    topic: str | None = None
    url: str | None = None
    exchange: str | None = None
    exchange_type: str = "topic"
    routing_key: str | None = None
    queue: str | None = None

    @property
    def label(self):
        """A name for logs and errors, without credentials."""
        if self.kind == SLUICE:
            return f"sluice:{self.topic}"
        where = urlsplit(self.url)
        host = f"{where.scheme}://{where.hostname or ''}{':' + str(where.port) if where.port else ''}"
        return f"{host} {self.exchange or self.queue}"


def broker_url(kind):
    """The default URL of a kind of broker: AMQP_URL or REDIS_URL from the environment."""
    return os.environ.get("AMQP_URL", AMQP_URL) if kind == AMQP else os.environ.get("REDIS_URL", REDIS_URL)


def resolve(destination):
    """Return the Destination a string names; raise InvalidDestination."""
    if not isinstance(destination, str) or not 1 <= len(destination) <= 512:
        raise exceptions.InvalidDestination(destination=destination, reason="use a string of 1 to 512 characters")
    if ":" not in destination:
        return _named(destination)
    return _parse(destination, destination)


def _named(name):
    configured = getattr(settings, "SLUICE_OUTBOX_DESTINATIONS", None) or {}
    if not _NAME.match(name) or name not in configured:
        raise exceptions.InvalidDestination(
            destination=name,
            reason="use sluice:TOPIC, amqp:EXCHANGE/ROUTING_KEY, redis:QUEUE, an amqp:// or redis:// URL, "
            "or a name from SLUICE_OUTBOX_DESTINATIONS",
        )
    target = configured[name]
    if not isinstance(target, str) or ":" not in target:
        raise exceptions.InvalidDestination(destination=name, reason="its setting must be a destination string")
    return _parse(target, name)


def _parse(text, given):
    scheme, _, rest = text.partition(":")
    if rest.startswith("//"):
        return _url(text, given)
    if scheme == SLUICE:
        from queueing import exceptions as queueing_exceptions
        from queueing import topics

        try:
            topics.validate_name(rest)
        except queueing_exceptions.InvalidTopicName:
            raise exceptions.InvalidDestination(destination=given, reason=f"{rest!r} is not a topic name") from None
        return Destination(kind=SLUICE, topic=rest)
    if scheme == AMQP:
        exchange, _, routing_key = rest.partition("/")
        return _amqp(given, broker_url(AMQP), exchange, routing_key or None, "topic")
    if scheme == REDIS:
        return _redis(given, broker_url(REDIS), rest)
    raise exceptions.InvalidDestination(destination=given, reason=f"unknown kind {scheme!r}")


def _url(text, given):
    parts = urlsplit(text)
    options = dict(parse_qsl(parts.query))
    if parts.scheme in _AMQP_SCHEMES:
        exchange, routing_key = options.pop("exchange", ""), options.pop("routing_key", None)
        exchange_type = options.pop("exchange_type", "topic")
        url = urlunsplit(parts._replace(query=urlencode(options)))
        return _amqp(given, url, exchange, routing_key, exchange_type)
    if parts.scheme in _REDIS_SCHEMES:
        queue = options.pop("queue", "")
        return _redis(given, urlunsplit(parts._replace(query=urlencode(options))), queue)
    raise exceptions.InvalidDestination(destination=given, reason=f"unknown URL scheme {parts.scheme!r}")


def _amqp(given, url, exchange, routing_key, exchange_type):
    if not exchange or len(exchange) > 255:
        raise exceptions.InvalidDestination(destination=given, reason="name an exchange")
    if exchange_type not in _EXCHANGE_TYPES:
        raise exceptions.InvalidDestination(destination=given, reason=f"no exchange type {exchange_type!r}")
    return Destination(kind=AMQP, url=url, exchange=exchange, exchange_type=exchange_type,
                       routing_key=routing_key)


def _redis(given, url, queue):
    if not queue or len(queue) > 255:
        raise exceptions.InvalidDestination(destination=given, reason="name a queue")
    return Destination(kind=REDIS, url=url, queue=queue, exchange=queue, routing_key=queue)
