"""manage.py worker --group G: run the handlers registered for a consumer group."""
import logging

from django.core.management.base import CommandError

from queueing import registry, worker
from queueing.management.base import EngineCommand, positive


class Command(EngineCommand):
    help = "Consume for a group, running its registered handlers in offset order per partition."
    requires_system_checks = "__all__"  # a long-running process: checked once at its start

    def add_arguments(self, parser):
        # Not required by argparse: a command extending this one may offer an alternative to --group.
        parser.add_argument("--group", help="the consumer or share group whose handlers to run")
        parser.add_argument("--topic", action="append", help="only these of the group's topics (repeatable)")
        parser.add_argument("--max-poll-records", type=positive, default=100, help="records per poll")

    def handle(self, *args, group, topic, max_poll_records, **options):
        if not group:
            raise CommandError("give --group G", returncode=2)
        logging.getLogger("sluice").setLevel(logging.INFO)
        subscriptions = registry.subscriptions(group)
        if topic:
            unknown = sorted(set(topic) - set(subscriptions))
            if unknown:
                raise CommandError(f"group {group!r} has no handler for {', '.join(unknown)}", returncode=2)
            subscriptions = {t: s for t, s in subscriptions.items() if t in topic}
        if not subscriptions:
            known = ", ".join(registry.groups()) or "none"
            raise CommandError(f"no handlers are registered for group {group!r} (groups with handlers: {known})", returncode=2)
        modes = {s.mode for s in subscriptions.values()}
        if modes == {"share"}:
            worker.ShareWorker(group, subscriptions, max_records=max_poll_records).run()
        else:
            worker.Worker(group, subscriptions, max_poll_records=max_poll_records).run()
