"""The inbox: idempotent consumers. A handler's effect and the record of the message commit together,
so a message delivered again is skipped: effects happen exactly once under at-least-once delivery."""
import functools

from django.db import transaction

from outbox.storage import events as storage


def message_id(record):
    """A record's message id: the CloudEvents id it carries, else its place in the log."""
    headers = record.headers or {}
    if headers.get("ce_id"):
        return headers["ce_id"]
    return f"{record.topic}-{record.partition}@{record.offset}"


def idempotent(consumer, *, key=message_id):
    """Decorate a handler so that it runs at most once per message for this consumer name.

    The handler runs inside a transaction that first records (consumer, message id); if the message
    was recorded already, the handler is skipped and the record counts as handled. Raises whatever
    the handler raises (then nothing is recorded and the delivery can be retried).
    """
    if not isinstance(consumer, str) or not 1 <= len(consumer) <= 255:
        raise ValueError("the consumer name must be 1 to 255 characters")

    def decorate(handler):
        @functools.wraps(handler)
        def run(record):
            with transaction.atomic():
                if not storage.remember_message(consumer=consumer, message_id=key(record)):
                    return None
                return handler(record)

        run.inbox_consumer = consumer
        return run

    return decorate


def prune(*, older_than_s, limit=10_000):
    """Forget handled messages older than older_than_s seconds; return how many went. A message
    redelivered after its entry is pruned would run again: keep entries longer than redelivery."""
    return storage.prune_inbox(older_than_s=older_than_s, limit=limit)


def kombu_callback(consumer, handler):
    """A kombu consumer callback that handles each broker message once for this consumer name.

    The handler gets the decoded body. The message id is the AMQP message_id (the relay sets the
    CloudEvents id there) or the `ce_id` header. The message is acknowledged after the transaction
    commits (a crash in between redelivers it, and the inbox then skips it); a handler error
    requeues it.
    """

    def on_message(body, message):
        message_id = message.properties.get("message_id") or (message.headers or {}).get("ce_id")
        if not message_id:
            message.reject()
            raise ValueError("a message without message_id or ce_id cannot be deduplicated")
        try:
            with transaction.atomic():
                if storage.remember_message(consumer=consumer, message_id=message_id):
                    handler(body)
        except Exception:
            message.requeue()
            raise
        message.ack()

    return on_message
