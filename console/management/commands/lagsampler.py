"""manage.py lagsampler [--once]: sample consumer-group lag for the console's charts."""
from console import lag
from queueing.management.base import EngineCommand


class Command(EngineCommand):
    help = "Sample every consumer group's lag per topic until stopped (SIGTERM); --once for one sample."

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true", help="one sample, then print how many rows it stored")

    def handle(self, *args, once, **options):
        if once:
            self.stdout.write(f"stored {lag.sample()} lag samples")
            return
        self.require_migrated()
        lag.LagSampler().run()
