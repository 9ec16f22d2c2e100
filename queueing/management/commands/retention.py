"""manage.py retention run|once: move log starts by time and size, drop old segments, compact."""
import dataclasses
import logging

from queueing import retention
from queueing.management.base import EngineCommand


class Command(EngineCommand):
    help = "Apply topics' retention and compaction: `once` for one pass, `run` for a pass every minute."

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True, metavar="{run,once}")
        actions.add_parser("run", help="a pass every SLUICE_RETENTION_CHECK_MS until stopped (SIGTERM)")
        actions.add_parser("once", help="one pass, then print what it did")

    def handle(self, *args, action, **options):
        if action == "run":
            logging.getLogger("sluice").setLevel(logging.INFO)
            retention.Retainer().run()
            return
        result = retention.run_pass()
        if result.skipped:
            self.stdout.write("Another retention pass is running; nothing done.")
            return
        fields = {k: v for k, v in dataclasses.asdict(result).items() if k not in ("more", "skipped")}
        self.stdout.write(", ".join(f"{name.replace('_', ' ')}: {count}" for name, count in fields.items()))
        if result.more:
            self.stdout.write("More expired records are left; run again (the loop does so at once).")
