"""What every engine command shares: one-line errors (exit code 2 for wrong input), quiet exits on
ordinary events (a closed pipe), and one line for an unmigrated or unreachable database."""
import argparse
import os
import sys

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DEFAULT_DB_ALIAS, connections, utils

from queueing import exceptions


class OneLineParser(CommandParser):
    """Say what is wrong in one line; the usage block stays in --help."""

    def error(self, message):
        if not self.called_from_command_line:
            super().error(message)
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def one_line(parser):
    """Make parser and its sub-command parsers report errors in one line."""
    parser.__class__ = OneLineParser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                one_line(sub)
    return parser


class EngineCommand(BaseCommand):
    # Operators' tools, run often and from scripts: Django's system checks (models, admin, URLs,
    # the tasks backend's QUEUES; about 0.4 s of a 2 s start on the project's machine) are for
    # `migrate`, `serve`, `manage.py check` and the long-running workers, relay and scheduler, not
    # for every call, as Django's own `shell` and `dbshell` skip them.
    requires_system_checks = []

    def create_parser(self, prog_name, subcommand, **kwargs):
        return one_line(super().create_parser(prog_name, subcommand, **kwargs))

    def run_from_argv(self, argv):
        try:
            super().run_from_argv(argv)
        except BrokenPipeError:
            # The reader went away (`| head -1`): an ordinary end, as for any Unix filter. Point
            # stdout at /dev/null so the interpreter's last flush does not fail again.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(0)

    def execute(self, *args, **options):
        try:
            return super().execute(*args, **options)
        except exceptions.QueueingError as error:
            raise CommandError(str(error), returncode=2) from error
        except UnicodeError as error:
            # An argument or input line in another encoding, where text is needed (a name, JSON).
            raise CommandError(f"not UTF-8 text: {error}", returncode=2) from error
        except KeyboardInterrupt:
            raise CommandError("interrupted; what was done before the interruption stays done", returncode=130) from None
        except utils.ProgrammingError as error:
            if not unmigrated():
                raise
            raise migrate_first() from error
        except OverflowError as error:
            # A number or a duration past what Python's dates hold (--by-duration P99999999D).
            raise CommandError(f"a value is out of range: {error}", returncode=2) from error
        except utils.DataError as error:
            # A value past what a column holds (a huge number): refused by the statement, so nothing changed.
            raise CommandError(f"a value does not fit: {first_line(error)}", returncode=2) from error
        except (utils.OperationalError, utils.InterfaceError) as error:
            raise CommandError(f"the database is unavailable: {first_line(error)}", returncode=1) from error

    def require_migrated(self):
        """Refuse at once on a database without this code's tables: for the long-running loops,
        which would otherwise log the failure and retry it for ever (as they do a lost database)."""
        if unmigrated():
            raise migrate_first()

    def table(self, headers, rows):
        """Write rows under headers in aligned columns, as Kafka's tools do."""
        rows = [["-" if v is None else str(v) for v in row] for row in rows]
        widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
        for row in [headers, *rows]:
            self.stdout.write("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())


def first_line(error):
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def migrate_first():
    """The one-line error of a command run on a database without this code's tables."""
    return CommandError(
        f"database {connections[DEFAULT_DB_ALIAS].settings_dict['NAME']!r} has no Sluice tables yet (or older "
        f"ones): run `manage.py migrate` (or `make run`) first", returncode=2
    )


def unmigrated():
    """True if the default database lacks migrations this code has (read on a fresh connection,
    since the failed statement may have left the command's own one unusable)."""
    from django.db.migrations.executor import MigrationExecutor

    connection = connections.create_connection(DEFAULT_DB_ALIAS)
    try:
        executor = MigrationExecutor(connection)
        return bool(executor.migration_plan(executor.loader.graph.leaf_nodes()))
    except utils.DatabaseError:
        return False
    finally:
        connection.close()


LARGEST = 2**31 - 1  # PostgreSQL's integer, the type of the columns these numbers go to
LARGEST_OFFSET = 2**63 - 1  # PostgreSQL's bigint, an offset's type


def offset_number(text):
    """argparse type: a whole number that fits an offset (bigint), of either sign."""
    value = whole(text)
    if not -LARGEST_OFFSET <= value <= LARGEST_OFFSET:
        raise argparse.ArgumentTypeError(f"{text} is past what an offset holds (at most {LARGEST_OFFSET} either way)")
    return value


def positive(text):
    """argparse type: a whole number of at least 1."""
    value = whole(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be at least 1")
    if value > LARGEST:
        raise argparse.ArgumentTypeError(f"{text} must be at most {LARGEST}")
    return value


def at_most(limit, *, hint=""):
    """argparse type: a whole number from 1 to limit (hint follows the message past it)."""
    def parse(text):
        value = positive(text)
        if value > limit:
            raise argparse.ArgumentTypeError(f"{text} must be at most {limit}{hint}")
        return value
    return parse


def whole(text):
    """argparse type: a whole number."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
