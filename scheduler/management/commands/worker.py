"""manage.py worker: the engine's worker (--group G) extended with task queues (--queue Q).

This app is listed before queueing in INSTALLED_APPS, so this command takes the name (the way
staticfiles' runserver extends Django's); --group runs exactly the engine's command.
"""
import logging

from django.core.management.base import CommandError

from queueing.management.base import at_most
from queueing.management.commands import worker as engine_worker
from scheduler import tasks, worker
from scheduler.management.commands.tasks import checked_queue


def seconds(text):
    import argparse
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text} must be a finite number, not negative")
    return value


# Processes one task worker runs; more tasks at once means more workers (each its own member).
MAX_CONCURRENCY = 256


def _refuse(options, meant_for):
    """Exit 2 naming the options given that belong to the other kind of worker, if any."""
    if options:
        raise CommandError(f"{' and '.join(options)} {'is' if len(options) == 1 else 'are'} for {meant_for}",
                           returncode=2)


class Command(engine_worker.Command):
    help = ("Run a group's registered handlers (--group G), or the tasks of a queue (--queue Q), "
            "--concurrency at a time, each in a child process.")

    def add_arguments(self, parser):
        super().add_arguments(parser)
        # The engine's options are for --group only: None when not given, so --queue can refuse them.
        self.group_defaults = {"max_poll_records": parser.get_default("max_poll_records")}
        parser.set_defaults(max_poll_records=None)
        parser.add_argument("--queue", help="run the tasks of this queue")
        parser.add_argument("--concurrency", type=at_most(MAX_CONCURRENCY, hint=" (run more workers for more)"),
                            default=None,
                            help=f"tasks run at once, each in a process of its own "
                                 f"(default 1, at most {MAX_CONCURRENCY})")
        parser.add_argument("--grace", type=seconds, default=None,
                            help="after SIGTERM, seconds running tasks get to finish before they are handed back "
                                 "(default 30)")

    def handle(self, *args, queue, concurrency, grace, **options):
        if queue is None:
            if not options.get("group"):
                raise CommandError("give --queue Q (a task queue's worker) or --group G (a consumer group's)",
                                   returncode=2)
            _refuse([name for name, value in (("--concurrency", concurrency), ("--grace", grace))
                     if value is not None], "a task queue's worker (--queue), not --group")
            for name, default in self.group_defaults.items():
                if options.get(name) is None:
                    options[name] = default
            return super().handle(*args, **options)
        if options.get("group"):
            raise CommandError("give --group or --queue, not both", returncode=2)
        _refuse([name for name, key in (("--topic", "topic"), ("--max-poll-records", "max_poll_records"))
                 if options.get(key) is not None], "a group's worker (--group), not --queue")
        checked_queue(queue)
        if not tasks.registered(queue):
            # Django tasks (found by their path when they come) and using(queue=...) reach queues
            # no @scheduler.task names: say so, but run.
            queues = ", ".join(sorted({t.queue for t in tasks.registered().values()})) or "none"
            self.stderr.write(f"No @scheduler.task names queue {queue!r} (queues named: {queues}); running what "
                              "is enqueued to it (Django tasks, using(queue=...)).")
        logging.getLogger("sluice").setLevel(logging.INFO)
        # The worker's own defaults for what was not given.
        given = {name: value for name, value in (("concurrency", concurrency), ("grace", grace)) if value is not None}
        worker.TaskWorker(queue, **given).run()
