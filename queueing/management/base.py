"""What every engine command shares: engine errors become CommandError with exit code 2."""
from django.core.management.base import BaseCommand, CommandError

from queueing import exceptions


class EngineCommand(BaseCommand):
    def execute(self, *args, **options):
        try:
            return super().execute(*args, **options)
        except exceptions.QueueingError as error:
            raise CommandError(str(error), returncode=2) from error

    def table(self, headers, rows):
        """Write rows under headers in aligned columns, as Kafka's tools do."""
        rows = [["-" if v is None else str(v) for v in row] for row in rows]
        widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
        for row in [headers, *rows]:
            self.stdout.write("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())


def positive(text):
    """argparse type: a whole number of at least 1."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be at least 1")
    return value
