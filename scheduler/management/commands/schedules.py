"""manage.py schedules list|show|enable|disable|run-now|delete: look at periodic schedules and act on them."""
from queueing.management.base import EngineCommand, at_most
from scheduler import models, schedules


def when(value, zone=None):
    if value is None:
        return None
    return value.astimezone(zone).isoformat(timespec="seconds") if zone else value.isoformat(timespec="seconds")


def timing(row):
    if row.kind == models.Schedule.Kind.CRON:
        return f"cron {row.cron}"
    if row.kind == models.Schedule.Kind.INTERVAL:
        return f"every {row.interval.total_seconds():g}s"
    return f"once {when(row.at)}"


MAX_SHOWN = 1000  # next runs or last ticks `schedules show` lists: each next run is computed


class Command(EngineCommand):
    help = "List schedules, show one with its next runs and last ticks, enable, disable, run now or delete one."

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True,
                                        metavar="{list,show,enable,disable,run-now,delete}")
        listing = actions.add_parser("list", help="schedules by name")
        listing.add_argument("--task", help="a task name")
        show = actions.add_parser("show", help="a schedule, its next runs (UTC and its zone) and its last ticks")
        show.add_argument("name")
        show.add_argument("--next", type=at_most(MAX_SHOWN), default=5,
                          help=f"how many next runs (default 5, at most {MAX_SHOWN:,})")
        show.add_argument("--ticks", type=at_most(MAX_SHOWN), default=10,
                          help=f"how many last ticks (default 10, at most {MAX_SHOWN:,})")
        for name, text in (("enable", "enable: its next tick is the first from now"),
                           ("disable", "disable: nothing fires until enabled"),
                           ("run-now", "enqueue its task now (its timing does not move)"),
                           ("delete", "delete it and its tick records")):
            actions.add_parser(name, help=text).add_argument("name")

    def handle(self, *args, action, **options):
        getattr(self, f"do_{action.replace('-', '_')}")(**options)

    def do_list(self, *, task, **options):
        rows = models.Schedule.objects.order_by("name")
        if task:
            rows = rows.filter(task_name=task)
        rows = list(rows)
        self.table(
            ["NAME", "TASK", "TIMING", "TIMEZONE", "ENABLED", "CATCH-UP", "NEXT-RUN", "LAST-TICK", "SOURCE"],
            [[r.name, r.task_name, timing(r), r.timezone, "yes" if r.enabled else "no", _catch_up(r),
              when(r.next_run_at) if r.enabled else None, when(r.last_tick_at), r.source] for r in rows],
        )
        self.stdout.write(f"{len(rows)} schedule(s).")

    def do_show(self, *, name, next, ticks, **options):
        row = schedules.get(name)
        fields = [("name", row.name), ("task", row.task_name), ("args", row.args), ("kwargs", row.kwargs),
                  ("timing", timing(row)), ("timezone", row.timezone), ("enabled", "yes" if row.enabled else "no"),
                  ("catch-up", _catch_up(row)), ("tick kwarg", row.tick_kwarg or None), ("source", row.source), ("last tick", when(row.last_tick_at)),
                  ("last task", row.last_task_id)]
        width = max(len(n) for n, _ in fields)
        for field, value in fields:
            self.stdout.write(f"{field.ljust(width)}  {'-' if value is None else value}")
        from scheduler import cron

        zone = cron.zone(row.timezone)
        runs = schedules.next_runs(row, next)
        self.stdout.write("")
        if runs:
            self.table(["NEXT-RUN (UTC)", f"LOCAL ({row.timezone})"], [[when(t), when(t, zone)] for t in runs])
        else:
            self.stdout.write("No next run (" + ("disabled" if not row.enabled else "done") + ").")
        last = list(row.ticks.order_by("-tick_at")[:ticks])
        if last:
            self.stdout.write("")
            self.table(["TICK (UTC)", "FIRED", "TRIGGER", "MISSED", "TASK", "ERROR"],
                       [[when(t.tick_at), when(t.fired_at), t.trigger, t.missed, t.task_id, t.error or None]
                        for t in last])

    def do_enable(self, *, name, **options):
        row = schedules.enable(name)
        nxt = when(row.next_run_at) or "none (a one-off that has run)"
        self.stdout.write(f"Enabled schedule {name}; next run {nxt}.")

    def do_disable(self, *, name, **options):
        schedules.disable(name)
        self.stdout.write(f"Disabled schedule {name}.")

    def do_run_now(self, *, name, **options):
        result = schedules.run_now(name)
        self.stdout.write(f"Enqueued task {result.id} for schedule {name}.")

    def do_delete(self, *, name, **options):
        schedules.delete(name)
        self.stdout.write(f"Deleted schedule {name}.")


def _catch_up(row):
    return f"all (up to {row.catch_up_limit})" if row.catch_up == models.Schedule.CatchUp.ALL else row.catch_up
