"""Raw SQL of delayed records: claiming due ones for the mover, the time of the next one."""
from queueing.storage.log import cursor, run


def claim_due(*, limit):
    """Delete and return up to limit due records, earliest first (run inside the caller's transaction)."""
    return run(cursor(), "claim_due", {"limit": limit}, binary=True).fetchall()


def next_due():
    """Return (seconds until the earliest waiting record is due, its deliver_at), or (None, None)."""
    seconds, deliver_at = run(cursor(), "next_due", {}).fetchone()
    return (None, None) if seconds is None else (float(seconds), deliver_at)
