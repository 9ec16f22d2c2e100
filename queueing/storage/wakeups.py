"""Raw SQL of wake-ups: a waiting reader's asks to be notified, on its own LISTEN connection."""
import psycopg.errors

from queueing.sql import queries


def ask_for_wakeups(listener, *, space, keys):
    """Ask the writers of keys (in lock space) to NOTIFY, on a reader's autocommit LISTEN connection
    (the protocol is at the top of sql/wakeups.sql); return the keys refused, which writers that
    missed the ask hold. The keys granted stay held until stop_waiting(). Driver errors are
    psycopg's: the caller owns the connection."""
    rows = listener.execute(queries["ask_for_wakeups"], {"space": space, "keys": list(keys)}).fetchall()
    return {row[0] for row in rows}


def wait_for_writers(listener, *, space, keys, timeout):
    """Wait up to timeout seconds for the writers in flight on keys to end, then hold the keys as
    ask_for_wakeups does; return False if one was still in flight at the timeout (the keys granted
    before it stay held)."""
    milliseconds = max(1, round(timeout * 1000))
    if getattr(listener, "_sluice_lock_timeout", None) != milliseconds:
        listener.execute(f"SET lock_timeout = {milliseconds}")
        listener._sluice_lock_timeout = milliseconds
    try:
        listener.execute(queries["wait_for_writers"], {"space": space, "keys": list(keys)})
    except psycopg.errors.LockNotAvailable:
        return False
    return True


def stop_waiting(listener):
    """Withdraw every ask on this LISTEN connection: the reader is busy again, or what it waits for
    changed."""
    listener.execute(queries["stop_waiting"])
