"""manage.py halfmessages checkback|list|show|commit|rollback."""
import logging

from outbox import half, models
from queueing.management.base import EngineCommand, positive


class Command(EngineCommand):
    help = "Check back unresolved half messages, or list, show, commit and roll them back by hand."

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True, metavar="{checkback,list,show,commit,rollback}")
        run = actions.add_parser("checkback", help="check back due half messages until stopped (several may run)")
        run.add_argument("--batch", type=positive, default=50)
        listing = actions.add_parser("list", help="half messages, newest first")
        listing.add_argument("--state", choices=[s.value for s in models.HalfMessage.State])
        listing.add_argument("--limit", type=positive, default=50)
        for name in ("show", "commit", "rollback"):
            sub = actions.add_parser(name, help=f"{name} one half message" + (" (operator override, recorded)"
                                                                             if name != "show" else ""))
            sub.add_argument("id")

    def handle(self, *args, action, **options):
        getattr(self, f"do_{action}")(**options)

    def do_checkback(self, *, batch, **options):
        logging.getLogger("sluice").setLevel(logging.INFO)
        half.CheckBack(batch=batch).run()

    def do_list(self, *, state, limit, **options):
        rows = models.HalfMessage.objects.order_by("-created_at")
        if state:
            rows = rows.filter(state=state)
        self.table(["ID", "GROUP", "TOPIC", "STATE", "CHECKS", "CREATED", "RESOLUTION"],
                   [[m.id, m.producer_group, m.topic, m.state, f"{m.check_count}/{m.max_checks}",
                     m.created_at.isoformat(timespec="seconds"), m.resolution or None] for m in rows[:limit]])

    def do_show(self, *, id, **options):
        message = half.status(id)
        self.stdout.write(f"Half message {message.id}: {message.state}, topic {message.topic}, group "
                          f"{message.producer_group}, {message.check_count} of {message.max_checks} checks")
        if message.offset is not None:
            self.stdout.write(f"In the log at {message.topic}-{message.partition}@{message.offset}.")
        if message.resolution:
            self.stdout.write(f"Resolution: {message.resolution}")
        self.table(["CHECK", "RESULT", "AT", "DETAIL"],
                   [[c.number, c.result, c.checked_at.isoformat(timespec="seconds"), c.detail or None]
                    for c in message.checks.order_by("number")])

    def do_commit(self, *, id, **options):
        message = half.commit(id, reason="committed by an operator")
        self.stdout.write(f"Committed: {message.topic}-{message.partition}@{message.offset}.")

    def do_rollback(self, *, id, **options):
        half.rollback(id, reason="rolled back by an operator")
        self.stdout.write(f"Rolled back half message {id}.")
