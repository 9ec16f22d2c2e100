"""Raw SQL of delayed records: claiming due ones for the mover, with the time of the next one."""
from queueing.storage.log import cursor, run


def claim_due(*, limit):
    """Delete and return up to limit due records, earliest first (run inside the caller's
    transaction), with the seconds until the earliest record left is due and its deliver_at
    (None, None if none is left): (rows, seconds, deliver_at)."""
    rows = run(cursor(), "claim_due", {"limit": limit}, binary=True).fetchall()
    seconds, deliver_at = rows[0][-2:]
    return [row[:-2] for row in rows if row[0] is not None], seconds, deliver_at
