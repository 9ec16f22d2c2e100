"""manage.py inbox prune: forget old entries of the idempotent consumers' dedup table."""
from outbox import retention
from queueing.management.base import EngineCommand


class Command(EngineCommand):
    help = "Delete inbox (dedup) entries older than an age."

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True, metavar="{prune}")
        prune = actions.add_parser("prune", help="delete entries older than --older-than")
        prune.add_argument("--older-than", metavar="AGE",
                           help="7d, 12h, 30m or ISO 8601 (P7D); default SLUICE_INBOX_RETENTION, 7d")

    def handle(self, *args, action, older_than, **options):
        seconds = retention.inbox_retention_s() if older_than is None else retention.parse_age(older_than)
        if seconds is None:
            self.stdout.write("Retention is 0 (keep forever): nothing pruned.")
            return
        total = retention.prune_all(retention.prune_inbox, older_than_s=seconds)
        self.stdout.write(f"Pruned {total} inbox entr{'y' if total == 1 else 'ies'} older than {older_than or 'the retention'}.")
