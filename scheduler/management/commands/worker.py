"""manage.py worker: the engine's worker (--group G) extended with task queues (--queue Q).

This app is listed before queueing in INSTALLED_APPS, so this command takes the name (the way
staticfiles' runserver extends Django's); --group runs exactly the engine's command.
"""
import logging

from django.core.management.base import CommandError

from queueing.management.base import positive
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


class Command(engine_worker.Command):
    help = ("Run a group's registered handlers (--group G), or the tasks of a queue (--queue Q), "
            "--concurrency at a time, each in a child process.")

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument("--queue", help="run the tasks of this queue")
        parser.add_argument("--concurrency", type=positive, default=1,
                            help="tasks run at once, each in a process of its own (default 1)")
        parser.add_argument("--grace", type=seconds, default=30.0,
                            help="after SIGTERM, seconds running tasks get to finish before they are handed back")

    def handle(self, *args, queue, concurrency, grace, **options):
        if queue is None:
            if not options.get("group"):
                raise CommandError("give --queue Q (a task queue's worker) or --group G (a consumer group's)",
                                   returncode=2)
            return super().handle(*args, **options)
        if options.get("group"):
            raise CommandError("give --group or --queue, not both", returncode=2)
        checked_queue(queue)
        if not tasks.registered(queue):
            # Django tasks (found by their path when they come) and using(queue=...) reach queues
            # no @scheduler.task names: say so, but run.
            queues = ", ".join(sorted({t.queue for t in tasks.registered().values()})) or "none"
            self.stderr.write(f"No @scheduler.task names queue {queue!r} (queues named: {queues}); running what "
                              "is enqueued to it (Django tasks, using(queue=...)).")
        logging.getLogger("sluice").setLevel(logging.INFO)
        worker.TaskWorker(queue, concurrency=concurrency, grace=grace).run()
