"""The transactional outbox: publish an event with your data; the relay delivers it after commit."""
import json

from django.db import connection

from outbox import exceptions, models

DESTINATION_PREFIX = "sluice:"


def validate_destination(destination):
    """Return the Sluice topic a destination names (None for an external broker's); raise
    InvalidDestination."""
    from outbox import brokers
    from queueing import topics

    if not isinstance(destination, str) or len(destination) > 512:
        raise exceptions.InvalidDestination(destination=destination)
    if brokers.parse(destination) is not None:
        return None
    if not destination.startswith(DESTINATION_PREFIX):
        raise exceptions.InvalidDestination(destination=destination)
    topic = destination[len(DESTINATION_PREFIX):]
    try:
        topics.validate_name(topic)
    except Exception:
        raise exceptions.InvalidDestination(destination=destination) from None
    return topic


def _validate(aggregate_type, aggregate_id, event_type, payload, destination, headers):
    validate_destination(destination)
    for name, value in (("aggregate_type", aggregate_type), ("aggregate_id", aggregate_id),
                        ("event_type", event_type)):
        if not isinstance(value, str) or not 1 <= len(value) <= 255:
            raise exceptions.OutboxError(f"{name} must be a string of 1 to 255 characters")
    try:
        json.dumps(payload)
    except (TypeError, ValueError) as error:
        raise exceptions.OutboxError(f"the payload is not JSON: {error}") from None
    if headers is not None and not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
        raise exceptions.OutboxError("headers must be a dict of str to str")


def publish_many(events):
    """Write many events (dicts of publish's arguments) with one INSERT, in the current transaction."""
    rows = []
    for event in events:
        _validate(event["aggregate_type"], event["aggregate_id"], event["event_type"], event["payload"],
                  event["destination"], event.get("headers"))
        rows.append(models.OutboxEvent(
            aggregate_type=event["aggregate_type"], aggregate_id=event["aggregate_id"],
            event_type=event["event_type"], payload=event["payload"], headers=event.get("headers") or {},
            destination=event["destination"], key=event.get("key") or "",
        ))
    created = models.OutboxEvent.objects.bulk_create(rows)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_notify('sluice_outbox', '')")
    return created


def publish(*, aggregate_type, aggregate_id, event_type, payload, destination, headers=None, key=None):
    """Write an event in the current transaction and return it.

    Call it inside the `transaction.atomic()` that changes your data: the event is delivered if and
    only if that transaction commits, in order with the other events of the same aggregate. Called
    outside a transaction it commits at once, on its own.
    """
    _validate(aggregate_type, aggregate_id, event_type, payload, destination, headers)
    event = models.OutboxEvent.objects.create(
        aggregate_type=aggregate_type, aggregate_id=aggregate_id, event_type=event_type, payload=payload,
        headers=headers or {}, destination=destination, key=key or "",
    )
    with connection.cursor() as cursor:
        # Delivered at commit (and only then): wakes a relay that waits for work.
        cursor.execute("SELECT pg_notify('sluice_outbox', '')")
    return event


def cloudevent(event_id, aggregate_type, aggregate_id, event_type, payload, created_at):
    """The CloudEvents 1.0 envelope (structured JSON mode) the relay delivers."""
    return {
        "specversion": "1.0",
        "id": str(event_id),
        "source": f"/sluice/{aggregate_type}",
        "type": event_type,
        "subject": aggregate_id,
        "time": created_at.isoformat(),
        "datacontenttype": "application/json",
        "data": payload,
    }
