"""What the shop's pages and demo read of the task layer: orders' countdown tasks, the shop's schedules."""
import dataclasses
import datetime

from scheduler import cron, models as task_models, schedules
from shop import tasks


@dataclasses.dataclass(frozen=True, kw_only=True)
class ScheduleView:
    schedule: task_models.Schedule
    next_runs: list  # (UTC, in the schedule's zone) as ISO 8601 texts

    @property
    def next_run(self):
        return self.next_runs[0] if self.next_runs else None


def countdowns(orders):
    """{order id: its countdown task's row} for the orders that have one, in one query."""
    ids = {o.cancel_task_id: o.id for o in orders if o.cancel_task_id is not None}
    return {ids[row.id]: row for row in task_models.TaskResult.objects.filter(id__in=ids)}


def shop_schedules(count=3):
    """The shop's schedules in the database (synced from shop/tasks.py when a scheduler starts),
    each with its next count runs in UTC and in its own zone."""
    found = []
    for row in task_models.Schedule.objects.filter(task_name__in=[tasks.expire_coupons.name]).order_by("name"):
        zone = cron.zone(row.timezone)
        runs = [(t.astimezone(datetime.timezone.utc).isoformat(timespec="seconds"),
                 t.astimezone(zone).isoformat(timespec="seconds")) for t in schedules.next_runs(row, count)]
        found.append(ScheduleView(schedule=row, next_runs=runs))
    return found
