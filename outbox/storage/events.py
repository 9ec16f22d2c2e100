"""Raw SQL of outbox events and the inbox, on Django's connection (so it joins the caller's transaction)."""
import datetime
import json
import typing
import uuid

from django.db import connection

from outbox.sql import queries
from queueing import storage as engine_storage


class ClaimedEvent(typing.NamedTuple):
    """An outbox event claimed for delivery (payload and headers decoded)."""

    seq: int
    id: uuid.UUID
    aggregate_type: str
    aggregate_id: str
    event_type: str
    payload: typing.Any
    headers: dict
    destination: str
    key: str
    created_at: datetime.datetime
    attempts: int
    due: bool

    @property
    def aggregate(self):
        return self.aggregate_type, self.aggregate_id


def _run(name, params, fetch=None):
    with connection.cursor() as cursor:
        cursor.execute(queries[name], params)
        if fetch == "all":
            return cursor.fetchall()
        if fetch == "one":
            return cursor.fetchone()
        return cursor.rowcount


def _json(value):
    # Django's cursors leave jsonb as text (its JSONField decodes it); raw reads decode here.
    return json.loads(value) if isinstance(value, str) else value


def insert_event(*, aggregate_type, aggregate_id, event_type, payload, headers, destination, key):
    """Insert one event (payload and headers as JSON text) and notify; return (seq, id, created_at)."""
    params = {"aggregate_type": aggregate_type, "aggregate_id": aggregate_id, "event_type": event_type,
              "payload": payload, "headers": headers, "destination": destination, "key": key}
    return _run("insert_event", params, fetch="one")[:3]


def wake_relays():
    """Notify waiting relays at commit (caller's transaction), if any relay waits."""
    _run("wake_relays", None)


CLAIM_WINDOW = 8  # times the batch: how many of the oldest undelivered events a claim looks at first


def claim_events(*, limit):
    """Claim a batch (caller's transaction): ClaimedEvents in seq order, each aggregate's a run of
    its oldest undelivered events. The heads stay locked until the transaction ends.

    Heads are looked for among the oldest limit * CLAIM_WINDOW undelivered events first, and among
    all of them only if those hold none to take (see claim_events in events.sql).
    """
    # On the engine's cursor, which prepares it: planning this query took longer than running it
    # (1.4 ms against 0.4 on the CI machine), and the relay runs it for every batch.
    rows = engine_storage.execute(queries["claim_events"], {"limit": limit, "window": limit * CLAIM_WINDOW}).fetchall()
    if not rows:
        rows = engine_storage.execute(queries["claim_events"], {"limit": limit, "window": None}).fetchall()
    return [ClaimedEvent(*row[:5], _json(row[5]), _json(row[6]) or {}, *row[7:]) for row in rows]


def mark_delivered(*, seqs):
    if seqs:
        _run("mark_delivered", {"seqs": list(seqs)})


def mark_delivered_along(*, seqs):
    """mark_delivered as (query, params), for the statement that appends the events to their topics."""
    return queries["mark_delivered"], {"seqs": list(seqs)}


def mark_failed(*, seq, error, delay_ms):
    _run("mark_failed", {"seq": seq, "error": error[:2000], "delay_ms": delay_ms})


def defer_events(*, seqs, error, delay_ms):
    if seqs:
        _run("defer_events", {"seqs": list(seqs), "error": error[:2000], "delay_ms": delay_ms})


def prune_delivered(*, older_than_s, limit):
    """Delete up to limit delivered events older than older_than_s; return how many went."""
    return _run("prune_delivered", {"older_than_s": older_than_s, "limit": limit})


def remember_message(*, consumer, message_id):
    """True if this is the consumer's first sight of the message (caller's transaction)."""
    return _run("remember_message", {"consumer": consumer, "message_id": message_id}, fetch="one") is not None


def prune_inbox(*, older_than_s, limit):
    """Delete up to limit inbox entries older than older_than_s; return how many went."""
    return _run("prune_inbox", {"older_than_s": older_than_s, "limit": limit})
