"""The transactional outbox: publish an event with your data; the relay delivers it after commit."""
import json

from django.conf import settings
from django.db import connection

from outbox import destinations, exceptions, models
from outbox.storage import events as storage

CHANNEL = "sluice_outbox"


def validate_destination(destination):
    """Return the Destination a string names (see outbox.destinations); raise InvalidDestination."""
    return destinations.resolve(destination)


def _encode(aggregate_type, aggregate_id, event_type, payload, destination, headers, key):
    """Check an event's fields; return the payload and headers as JSON text."""
    validate_destination(destination)
    for name, value in (("aggregate_type", aggregate_type), ("aggregate_id", aggregate_id),
                        ("event_type", event_type)):
        if not isinstance(value, str) or not 1 <= len(value) <= 255:
            raise exceptions.InvalidEvent(reason=f"{name} must be a string of 1 to 255 characters")
    if key is not None and (not isinstance(key, str) or len(key) > 255):
        raise exceptions.InvalidEvent(reason="key must be a string of at most 255 characters")
    if headers is not None and not (
        isinstance(headers, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items())
    ):
        raise exceptions.InvalidEvent(reason="headers must be a dict of str to str")
    try:
        body = json.dumps(payload, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as error:
        raise exceptions.InvalidEvent(reason=f"the payload is not JSON: {error}") from None
    return body, json.dumps(headers or {})


def publish(*, aggregate_type, aggregate_id, event_type, payload, destination, headers=None, key=None):
    """Write an event in the current transaction and return it (an OutboxEvent).

    Call it inside the `transaction.atomic()` that changes your data: the event is delivered if and
    only if that transaction commits. Events of one aggregate are delivered in the order they were
    published; for transactions that change the same aggregate, lock the aggregate's row (say
    `select_for_update()`) before publishing, so that this order is also their commit order.
    Called outside a transaction (autocommit), the event commits at once, on its own. Raises
    InvalidEvent or InvalidDestination, writing nothing.
    """
    body, header_text = _encode(aggregate_type, aggregate_id, event_type, payload, destination, headers, key)
    # One statement: the INSERT and the wake-up of a waiting relay (a NOTIFY, delivered at commit only).
    seq, event_id, created_at = storage.insert_event(
        aggregate_type=aggregate_type, aggregate_id=aggregate_id, event_type=event_type, payload=body,
        headers=header_text, destination=destination, key=key or "",
    )
    event = models.OutboxEvent(
        seq=seq, id=event_id, aggregate_type=aggregate_type, aggregate_id=aggregate_id, event_type=event_type,
        payload=payload, headers=headers or {}, destination=destination, key=key or "", created_at=created_at,
    )
    event._state.adding, event._state.db = False, connection.alias  # it is stored: save() updates
    return event


def publish_many(events):
    """Write many events (dicts of publish's arguments) with one INSERT, in the current transaction,
    in the order given; the same guarantees as publish. Returns the OutboxEvents."""
    rows = []
    for event in events:
        _encode(event["aggregate_type"], event["aggregate_id"], event["event_type"], event["payload"],
                event["destination"], event.get("headers"), event.get("key"))
        rows.append(models.OutboxEvent(
            aggregate_type=event["aggregate_type"], aggregate_id=event["aggregate_id"],
            event_type=event["event_type"], payload=event["payload"], headers=event.get("headers") or {},
            destination=event["destination"], key=event.get("key") or "",
        ))
    if not rows:
        return []
    created = models.OutboxEvent.objects.bulk_create(rows)
    storage.wake_relays()
    return created


def cloudevent(event_id, aggregate_type, aggregate_id, event_type, payload, created_at):
    """The CloudEvents 1.0 envelope (structured JSON mode) the relay delivers.

    source is SLUICE_OUTBOX_SOURCE (default "/sluice") and the aggregate type; subject is the
    aggregate id; id is the event's UUID, stable across redeliveries (deduplicate on it).
    """
    prefix = getattr(settings, "SLUICE_OUTBOX_SOURCE", "/sluice").rstrip("/")
    return {
        "specversion": "1.0",
        "id": str(event_id),
        "source": f"{prefix}/{aggregate_type}",
        "type": event_type,
        "subject": aggregate_id,
        "time": created_at.isoformat().replace("+00:00", "Z"),
        "datacontenttype": "application/json",
        "data": payload,
    }
