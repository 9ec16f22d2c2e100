"""Limits on when a task may start: concurrency slots per key (leased, renewed with the task's
lock) and rate windows per task name. Checked by the worker in the transaction that starts a task;
a task over a limit is handed back without counting the delivery."""
import dataclasses
import datetime
import re

from queueing import share
from scheduler import exceptions, models, storage

RATE = re.compile(r"^\s*(?P<count>[0-9]+)\s*/\s*(?P<unit>s|m|h)\s*$")
UNITS = {"s": 1, "m": 60, "h": 3600}
SLOT_RECHECK_S = 2.0  # a task waiting for a slot looks again after this, if no freed slot woke it first


@dataclasses.dataclass(frozen=True, kw_only=True)
class Rate:
    """At most count starts in any window of window_s seconds."""

    count: int
    window_s: int
    text: str

    def __str__(self):
        return self.text


def parse_rate(text):
    """Parse "10/s", "100/m" or "1000/h"; raise InvalidTask for anything else."""
    match = RATE.match(text) if isinstance(text, str) else None
    if match is None or int(match["count"]) < 1:
        raise exceptions.InvalidTask(
            reason=f"rate_limit {text!r} is not N/s, N/m or N/h with N a positive integer (say '10/s')")
    return Rate(count=int(match["count"]), window_s=UNITS[match["unit"]], text=f"{int(match['count'])}/{match['unit']}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Over:
    """A start refused: hand the record back for delay seconds; waiter: until a slot of key frees."""

    delay: float
    key: str | None = None


def take_slot(row, *, worker, lease_ms):
    """Take a slot of the task's concurrency key (caller's transaction); return Over if all are taken."""
    if row.concurrency_key is None:
        return None
    if storage.take_slot(key=row.concurrency_key, limit=row.concurrency_limit, task_id=row.id, worker=worker,
                         lease_ms=lease_ms):
        models.ConcurrencyWaiter.objects.filter(task_id=row.id).delete()
        return None
    return Over(delay=SLOT_RECHECK_S, key=row.concurrency_key)


def take_start(rate, task_name):
    """Count a start of task_name against its rate (caller's transaction, under the window's row
    lock); return the start's time, or Over with the wait until the window allows one."""
    starts, now = storage.lock_rate_window(task_name=task_name)
    window = datetime.timedelta(seconds=rate.window_s)
    recent = [s for s in starts if s > now - window]
    if len(recent) >= rate.count:
        # The oldest start of the full window leaves it at recent[-count] + window.
        return Over(delay=(recent[-rate.count] + window - now).total_seconds() + 0.001)
    storage.write_rate_window(task_name=task_name, starts=(recent + [now])[-rate.count:])
    return now


def wait_for_slot(row, record, *, group):
    """Note that the task waits for a slot of its key, so a freed slot makes its record available."""
    models.ConcurrencyWaiter.objects.update_or_create(
        task_id=row.id,
        defaults={"key": row.concurrency_key, "group": group, "topic": record.topic, "partition": record.partition,
                  "offset": record.offset},
    )


def free_slot(task_id):
    """Give back the task's slot (caller's transaction, with its outcome) and make the record of
    the task waiting longest for that key available at once."""
    key = storage.free_slot(task_id=task_id)
    if key is None:
        return
    waiter = storage.next_waiter(key=key)
    if waiter is not None:
        group, topic, partition, offset = waiter
        share.expedite(group, [(topic, partition, offset)])


def renew_slots(task_ids, *, worker, lease_ms):
    """Extend the leases of the slots the worker's running tasks hold; return the ids whose slot
    lapsed (it may be another task's now)."""
    task_ids = set(task_ids)
    return task_ids - storage.renew_slots(task_ids=task_ids, worker=worker, lease_ms=lease_ms)
