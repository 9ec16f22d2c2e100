"""manage.py reset_offsets: plan, and with --execute apply, a consumer group offset reset."""
import getpass
import socket
from pathlib import Path

from django.core.management.base import CommandError

from queueing import offsets
from queueing.management.base import EngineCommand, offset_number


class Command(EngineCommand):
    help = (
        "Reset a consumer group's offsets. Prints the plan and changes nothing unless --execute is given. "
        "Unlike Kafka, a group with live members can be reset: their generation is fenced (in-flight commits "
        "are refused) and they resume from the new offsets."
    )

    def add_arguments(self, parser):
        parser.add_argument("--group", required=True)
        which = parser.add_mutually_exclusive_group(required=True)
        which.add_argument("--topic", action="append", metavar="TOPIC[:P,...]", help="repeatable")
        which.add_argument("--all-topics", action="store_true", help="every topic the group has offsets for")
        which.add_argument("--from-file", metavar="CSV", help="topic,partition,offset per line (Kafka's format)")
        scenario = parser.add_mutually_exclusive_group()
        scenario.add_argument("--to-earliest", action="store_true")
        scenario.add_argument("--to-latest", action="store_true")
        scenario.add_argument("--to-current", action="store_true")
        scenario.add_argument("--to-offset", type=offset_number, metavar="N")
        scenario.add_argument("--shift-by", type=offset_number, metavar="N")
        scenario.add_argument("--to-datetime", metavar="ISO8601")
        scenario.add_argument("--by-duration", metavar="PnDTnHnMnS")
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument("--execute", action="store_true", help="apply the plan")
        mode.add_argument("--dry-run", action="store_true", help="only print the plan (the default)")
        parser.add_argument("--by", default=None, help="who resets, for the audit trail (default: user@host)")

    def handle(self, *args, group, topic, all_topics, from_file, execute, by, **options):
        scenario, value = self._scenario(options, from_file)
        plan = offsets.plan_reset(
            group, topic_specs=topic or (), all_topics=all_topics, scenario=scenario, value=value
        )
        self.table(
            ["GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "NEW-OFFSET"],
            [[r.group, r.topic, r.partition, r.current_offset, r.new_offset] for r in plan],
        )
        if not plan:
            raise CommandError("nothing to reset: no partition matched", returncode=2)
        if not execute:
            self.stdout.write("Dry run: nothing changed. Add --execute to apply this plan.")
            return
        actor = by or f"{getpass.getuser()}@{socket.gethostname()}"
        fenced = offsets.execute_reset(plan, actor=actor, scenario=self._describe(scenario, value))
        self.stdout.write(f"Reset {len(plan)} partition(s) of group {group}; generation {fenced} fenced.")

    def _scenario(self, options, from_file):
        chosen = [
            (name, options[name])
            for name in ("to_earliest", "to_latest", "to_current", "to_offset", "shift_by", "to_datetime", "by_duration")
            if options[name] not in (None, False)
        ]
        if from_file:
            if chosen:
                raise CommandError("--from-file sets the offsets itself; drop the other --to-/--shift-/--by- option", returncode=2)
            path = Path(from_file)
            if not path.is_file():
                raise CommandError(f"--from-file: no such file {from_file}", returncode=2)
            return "from_file", offsets.parse_plan_file(path.read_text())
        if not chosen:
            raise CommandError(
                "choose one of --to-earliest, --to-latest, --to-current, --to-offset, --shift-by, "
                "--to-datetime, --by-duration, --from-file",
                returncode=2,
            )
        name, value = chosen[0]
        if name == "to_datetime":
            value = offsets.parse_datetime(value)
        elif name == "by_duration":
            value = offsets.parse_duration(value)
        elif name == "to_offset" and value < 0:
            raise CommandError("--to-offset must be 0 or more", returncode=2)
        return name, value

    @staticmethod
    def _describe(scenario, value):
        if scenario in ("to_earliest", "to_latest", "to_current", "from_file"):
            return scenario
        return f"{scenario} {value}"
