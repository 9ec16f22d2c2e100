"""Raw SQL of delayed records: claiming due ones for the mover, the time of the next one."""
from queueing.storage.log import cursor, run


def claim_due(*, limit):
    """Delete and return up to limit due records, earliest first (run inside the caller's transaction)."""
    return run(cursor(), "claim_due", {"limit": limit}, binary=True).fetchall()


def next_due():
    """Seconds until the earliest waiting record is due, or None."""
    value = run(cursor(), "next_due", {}).fetchone()[0]
    return None if value is None else float(value)
