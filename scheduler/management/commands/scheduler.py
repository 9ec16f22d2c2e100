"""manage.py scheduler: fire periodic schedules' ticks until stopped (any number may run)."""
import logging

from queueing.management.base import EngineCommand, positive
from scheduler import ticker


class Command(EngineCommand):
    help = ("Sync the schedules declared in code, then fire due schedule ticks until SIGTERM; each tick fires "
            "once however many schedulers run.")
    requires_system_checks = "__all__"  # a long-running process: checked once at its start

    def add_arguments(self, parser):
        parser.add_argument("--batch", type=positive, default=100, help="schedules claimed per transaction")
        parser.add_argument("--no-sync", action="store_true", help="do not sync the schedules declared in code")

    def handle(self, *args, batch, no_sync, **options):
        self.require_migrated()
        logging.getLogger("sluice").setLevel(logging.INFO)
        ticker.Scheduler(batch=batch, sync=not no_sync).run()
