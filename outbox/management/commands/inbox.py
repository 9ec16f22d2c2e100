"""manage.py inbox prune: forget old entries of the idempotent consumers' dedup table."""
from queueing.management.base import EngineCommand

from outbox import inbox
from queueing import offsets


class Command(EngineCommand):
    help = "Delete inbox (dedup) entries older than a duration."

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True, metavar="{prune}")
        prune = actions.add_parser("prune", help="delete entries older than --older-than")
        prune.add_argument("--older-than", default="P7D", metavar="PnDTnHnMnS")

    def handle(self, *args, action, older_than, **options):
        seconds = offsets.parse_duration(older_than).total_seconds()
        total = 0
        while True:
            removed = inbox.prune(older_than_s=seconds)
            total += removed
            if removed < 10_000:
                break
        self.stdout.write(f"Pruned {total} inbox entr{'y' if total == 1 else 'ies'}.")
