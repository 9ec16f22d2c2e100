"""manage.py delayed run|list|cancel|reschedule: the records waiting for their time."""
import logging

from queueing import delayed, models, offsets, topics
from queueing.management.base import EngineCommand, positive


class Command(EngineCommand):
    help = "Run the mover that puts delayed records into the log when due, or list, cancel and reschedule them."

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True, metavar="{run,list,cancel,reschedule}")
        run = actions.add_parser("run", help="move due records into the log until stopped (several may run)")
        run.add_argument("--batch", type=positive, default=500)
        listing = actions.add_parser("list", help="records waiting, earliest first")
        listing.add_argument("--topic")
        listing.add_argument("--limit", type=positive, default=50)
        cancel = actions.add_parser("cancel", help="remove a waiting record")
        cancel.add_argument("id", type=positive)
        reschedule = actions.add_parser("reschedule", help="change when a waiting record is due")
        reschedule.add_argument("id", type=positive)
        when = reschedule.add_mutually_exclusive_group(required=True)
        when.add_argument("--at", metavar="ISO8601")
        when.add_argument("--delay", type=float, metavar="SECONDS")
        when.add_argument("--level", type=int, metavar="1-18", help="a RocketMQ delay level")

    def handle(self, *args, action, **options):
        getattr(self, f"do_{action}")(**options)

    def do_run(self, *, batch, **options):
        logging.getLogger("sluice").setLevel(logging.INFO)
        delayed.Mover(batch=batch).run()

    def do_list(self, *, topic, limit, **options):
        rows = models.DelayedRecord.objects.select_related("topic").order_by("deliver_at", "id")
        if topic:
            topics.get_topic(topic)  # TopicNotFound: a misspelt name is not "0 waiting"
            rows = rows.filter(topic__name=topic)
        total = rows.count()
        self.table(
            ["ID", "TOPIC", "PARTITION", "KEY", "DELIVER-AT", "BYTES"],
            [[r.id, r.topic.name, r.partition, None if r.key is None else bytes(r.key).decode(errors="replace"),
              r.deliver_at.isoformat(timespec="milliseconds"), len(r.value or b"")] for r in rows[:limit]],
        )
        self.stdout.write(f"{total} record(s) waiting{'' if total <= limit else f'; first {limit} shown'}.")

    def do_cancel(self, *, id, **options):
        delayed.cancel(id)
        self.stdout.write(f"Cancelled delayed record {id}.")

    def do_reschedule(self, *, id, at, delay, level, **options):
        if at is not None:
            when = {"deliver_at": offsets.parse_datetime(at)}
        elif delay is not None:
            when = {"delay": delay}
        else:
            when = {"delay_level": level}
        due = delayed.reschedule(id, **when)
        self.stdout.write(f"Delayed record {id} is now due at {due.isoformat(timespec='milliseconds')}.")
