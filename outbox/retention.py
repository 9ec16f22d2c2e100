"""How long delivered outbox events and inbox entries are kept: policies, and pruning by batch."""
import re

from django.conf import settings

from outbox.storage import events as storage
from queueing import exceptions, offsets

PRUNE_BATCH = 10_000
_AGE = re.compile(r"^\s*(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>s|m|h|d|w)\s*$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(text):
    """Seconds in an age: `7d`, `12h`, `30m`, `45s`, `2w`, or ISO 8601 (`P7D`, `PT12H`); `0` or
    `never` give None (keep forever). Raises InvalidArgument."""
    if text is None:
        return None
    text = str(text).strip()
    if text.lower() in ("0", "never", "off", ""):
        return None
    match = _AGE.match(text.lower())
    if match:
        seconds = float(match["number"]) * _SECONDS[match["unit"]]
    else:
        try:
            seconds = offsets.parse_duration(text.upper()).total_seconds()
        except exceptions.InvalidArgument:
            raise exceptions.InvalidArgument(
                reason=f"{text!r} is not an age: use 7d, 12h, 30m, 45s, 2w or ISO 8601 such as P7D"
            ) from None
    return seconds or None


def events_retention_s():
    """SLUICE_OUTBOX_PRUNE_AFTER in seconds (None: delivered events are kept)."""
    return parse_age(getattr(settings, "SLUICE_OUTBOX_PRUNE_AFTER", "7d"))


def inbox_retention_s():
    """SLUICE_INBOX_RETENTION in seconds (None: inbox entries are kept)."""
    return parse_age(getattr(settings, "SLUICE_INBOX_RETENTION", "7d"))


def prune_events(*, older_than_s, limit=PRUNE_BATCH):
    """Delete up to limit delivered events delivered more than older_than_s ago; return how many.
    Undelivered events are never pruned, however old."""
    return storage.prune_delivered(older_than_s=older_than_s, limit=limit)


def prune_inbox(*, older_than_s, limit=PRUNE_BATCH):
    """Delete up to limit inbox entries older than older_than_s; return how many. A message
    redelivered after its entry is gone runs again: keep entries longer than any redelivery can
    come (at least the retention of the topics idempotent consumers read)."""
    return storage.prune_inbox(older_than_s=older_than_s, limit=limit)


def prune_all(prune, *, older_than_s):
    """Run prune batch after batch until one is not full; return the total removed."""
    total = 0
    while True:
        removed = prune(older_than_s=older_than_s, limit=PRUNE_BATCH)
        total += removed
        if removed < PRUNE_BATCH:
            return total
