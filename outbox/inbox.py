"""The inbox: idempotent consumers. A handler's effect and the record of the message commit together,
so a message delivered again is skipped: effects happen exactly once under at-least-once delivery."""
import functools
import hashlib
import logging
import socket
import threading

from django.db import transaction

from outbox import brokers, retention
from outbox.storage import events as storage

logger = logging.getLogger("sluice.inbox")
_MAX_ID = 255


def default_message_id(record):
    """A Sluice record's message id: its `ce_id` header (the outbox relay sets it to the event's
    CloudEvents id), else its `id` header, else its place in the log, `topic-partition@offset`."""
    headers = record.headers or {}
    return headers.get("ce_id") or headers.get("id") or f"{record.topic}-{record.partition}@{record.offset}"


def _fit(message_id):
    """Ids longer than the column are stored as their SHA-256, which is as unique in practice."""
    message_id = str(message_id)
    if len(message_id) <= _MAX_ID:
        return message_id
    return "sha256:" + hashlib.sha256(message_id.encode()).hexdigest()


def _check_consumer(consumer):
    if not isinstance(consumer, str) or not 1 <= len(consumer) <= 255:
        raise ValueError("the consumer name must be 1 to 255 characters")


def remember(consumer, message_id):
    """Record (consumer, message id) in the caller's transaction; True the first time, False if it
    was recorded before. A concurrent first sight waits here until the other one commits or rolls
    back. Use it inside your own `transaction.atomic()` when the decorator does not fit."""
    return storage.remember_message(consumer=consumer, message_id=_fit(message_id))


def idempotent(consumer, *, message_id=None):
    """Decorate a handler so that it takes effect at most once per message for this consumer name.

    `@inbox.idempotent("billing")` under `@registry.handler(...)` (or around any function that takes
    a message). The handler runs in a transaction that first records (consumer, message id); if the
    message was recorded already, the handler is skipped and returns None, and the caller
    acknowledges it as handled. message_id is a function of the message (default:
    default_message_id, for Sluice records). Whatever the handler raises propagates and nothing is
    recorded, so the delivery can be retried. The handler's database writes must go through the
    same database connection (Django's default) to share the transaction.
    """
    _check_consumer(consumer)
    identify = message_id or default_message_id

    def decorate(handler):
        @functools.wraps(handler)
        def run(message):
            found = identify(message)
            with transaction.atomic():
                if not remember(consumer, found):
                    logger.debug("%s skips message %s: handled before", consumer, found)
                    return None
                return handler(message)

        run.inbox_consumer = consumer
        return run

    return decorate


def prune(*, older_than_s, limit=retention.PRUNE_BATCH):
    """Forget handled messages older than older_than_s seconds; return how many went (one batch)."""
    return retention.prune_inbox(older_than_s=older_than_s, limit=limit)


def kombu_message_id(message):
    """A broker message's id: its AMQP message_id (the relay sets the CloudEvents id there), else its
    `ce_id` header, else the `id` of a CloudEvents body."""
    headers = message.headers or {}
    found = message.properties.get("message_id") or headers.get("ce_id")
    if not found and isinstance(message.payload, dict):
        found = message.payload.get("id")
    return found


def kombu_callback(consumer, handler, *, message_id=kombu_message_id):
    """A kombu consumer callback that handles each broker message once for this consumer name.

    The handler gets the decoded body (for outbox events, the CloudEvents envelope as a dict). The
    message is acknowledged after the transaction commits: a crash in between redelivers it, and
    the inbox then skips it. A handler error rolls back, requeues the message and propagates; a
    message without an id cannot be deduplicated and is rejected (to the queue's dead-letter
    exchange, if it has one).
    """
    _check_consumer(consumer)

    def on_message(body, message):
        found = message_id(message)
        if not found:
            logger.warning("%s rejects a message without an id (message_id, ce_id or body id)", consumer)
            message.reject()
            return
        try:
            with transaction.atomic():
                if remember(consumer, found):
                    handler(body)
        except Exception:
            message.requeue()
            raise
        message.ack()

    return on_message


def consume_kombu(consumer, handler, *, queue, url=None, stop_event=None, limit=None, timeout=1.0, prefetch=10):
    """Consume a broker queue through the inbox until stop_event is set or limit messages came.

    queue is a kombu.Queue or the name of an existing queue; url defaults to AMQP_URL. Each message
    is handled once for this consumer name (see kombu_callback) and acknowledged after its
    transaction commits. A handler error is logged and the message requeued. Returns the number of
    messages received (handled or skipped). Connection drops are retried with kombu's back-off.
    """
    import kombu

    from outbox import destinations

    stop_event = stop_event or threading.Event()
    callback = kombu_callback(consumer, handler)
    received = 0

    def on_message(body, message):
        nonlocal received
        received += 1
        try:
            callback(body, message)
        except Exception:  # noqa: BLE001 - requeued by the callback; keep consuming
            logger.exception("%s: handler failed; message requeued", consumer)

    if isinstance(queue, str):
        queue = kombu.Queue(queue, no_declare=True)

    def done():
        return stop_event.is_set() or (limit is not None and received >= limit)

    with kombu.Connection(url or destinations.broker_url(destinations.AMQP), connect_timeout=5) as conn:
        while not done():
            try:
                conn.ensure_connection(max_retries=3)
                with conn.Consumer([queue], callbacks=[on_message], accept=[brokers.CONTENT_TYPE, "application/json"],
                                   prefetch_count=prefetch):
                    while not done():
                        try:
                            conn.drain_events(timeout=timeout)
                        except socket.timeout:
                            continue
            except conn.recoverable_connection_errors as error:
                # Unacknowledged messages go back to the queue with the connection; the inbox skips
                # those already handled when they come again.
                logger.warning("%s: broker connection lost (%s); reconnecting", consumer, error)
                stop_event.wait(1.0)
    return received
