"""manage.py relay: deliver committed outbox events (several may run)."""
import logging

from queueing.management.base import EngineCommand, positive

from outbox import relay
from queueing import offsets



class Command(EngineCommand):
    help = "Deliver committed outbox events to their topics, in order per aggregate, until stopped."

    def add_arguments(self, parser):
        parser.add_argument("--batch", type=positive, default=200)
        parser.add_argument("--prune-after", metavar="PnDTnHnMnS", default="P7D",
                            help="delete delivered events older than this (default P7D; P0D keeps them)")

    def handle(self, *args, batch, prune_after, **options):
        logging.getLogger("sluice").setLevel(logging.INFO)
        keep = offsets.parse_duration(prune_after).total_seconds()
        relay.Relay(batch=batch, prune_after_s=keep or None).run()
