"""manage.py relay: deliver committed outbox events until stopped (several may run), or --once."""
import logging

from outbox import relay, retention
from queueing.management.base import EngineCommand, positive


class Command(EngineCommand):
    help = "Deliver committed outbox events to their destinations, in order per aggregate, until stopped."
    requires_system_checks = "__all__"  # a long-running process: checked once at its start

    def add_arguments(self, parser):
        parser.add_argument("--batch", type=positive, default=200, help="events per transaction (default 200)")
        parser.add_argument("--prune-after", metavar="AGE",
                            help="delete events delivered longer ago than AGE (7d, 12h, P7D; 0 keeps them); "
                                 "default SLUICE_OUTBOX_PRUNE_AFTER, 7d")
        parser.add_argument("--inbox-retention", metavar="AGE",
                            help="also delete inbox entries older than AGE (0: leave them); "
                                 "default SLUICE_INBOX_RETENTION, 7d")
        parser.add_argument("--once", action="store_true",
                            help="deliver what is deliverable now, prune, print a summary and exit")
        parser.add_argument("--status", action="store_true", help="print the backlog and exit")

    def handle(self, *args, batch, prune_after, inbox_retention, once, status, **options):
        if status:
            self.print_backlog()
            return
        keep_events = retention.events_retention_s() if prune_after is None else retention.parse_age(prune_after)
        keep_inbox = retention.inbox_retention_s() if inbox_retention is None else retention.parse_age(inbox_retention)
        loop = relay.Relay(batch=batch, prune_after_s=keep_events, inbox_retention_s=keep_inbox)
        if not once:
            self.require_migrated()
            logging.getLogger("sluice").setLevel(logging.INFO)
            loop.run()
            return
        try:
            while loop.run_once():
                pass
            pruned = loop.prune(force=True)
        finally:
            loop.publisher.close()
        self.stdout.write(f"Delivered {loop.delivered} event(s); {loop.failed} failed and {loop.deferred} deferred "
                          f"(retried after a back-off); pruned {pruned} row(s).")
        self.print_backlog()

    def print_backlog(self):
        backlog = relay.backlog()
        self.stdout.write(f"Undelivered: {backlog['undelivered']} ({backlog['backing_off']} backing off), "
                          f"oldest from {backlog['oldest'] or '-'}; delivered and kept: {backlog['delivered']}.")
        if backlog["errors"]:
            self.table(["destination", "events", "last error"],
                       [[d, n, e[:100]] for d, n, e in backlog["errors"]])
