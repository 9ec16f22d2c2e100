"""Raw SQL of outbox events and the inbox, on Django's connection (so it joins the caller's transaction)."""
import json

from django.db import connection

from outbox.sql import queries


def _run(name, params, fetch=None):
    with connection.cursor() as cursor:
        cursor.execute(queries[name], params)
        if fetch == "all":
            return cursor.fetchall()
        if fetch == "one":
            return cursor.fetchone()
        return cursor.rowcount


def claim_events(*, limit):
    """Lock up to limit deliverable events (caller's transaction); payload and headers decoded."""
    rows = _run("claim_events", {"limit": limit}, fetch="all")
    # Django's cursors leave jsonb as text (its JSONField decodes it); raw reads decode here.
    return [(*row[:5], _json(row[5]), _json(row[6]) or {}, *row[7:]) for row in rows]


def _json(value):
    return json.loads(value) if isinstance(value, str) else value


def mark_delivered(*, seqs):
    _run("mark_delivered", {"seqs": list(seqs)})


def mark_failed(*, seq, error, delay_ms):
    _run("mark_failed", {"seq": seq, "error": error[:2000], "delay_ms": delay_ms})


def prune_delivered(*, older_than_s, limit):
    return _run("prune_delivered", {"older_than_s": older_than_s, "limit": limit})


def remember_message(*, consumer, message_id):
    """True if this is the consumer's first sight of the message (caller's transaction)."""
    return _run("remember_message", {"consumer": consumer, "message_id": message_id}, fetch="one") is not None


def prune_inbox(*, older_than_s, limit):
    return _run("prune_inbox", {"older_than_s": older_than_s, "limit": limit})
