"""manage.py groups list|describe|delete: Kafka's kafka-consumer-groups for Sluice."""
from django.core.management.base import CommandError

from queueing import exceptions, models, selectors
from queueing.management.base import EngineCommand


class Command(EngineCommand):
    help = "List consumer groups, describe their offsets and lag, or delete an empty group."

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True, metavar="{list,describe,delete}")
        actions.add_parser("list", help="list consumer groups")
        describe = actions.add_parser("describe", help="offsets, lag and members of a group")
        describe.add_argument("group", nargs="?", help="default: every group")
        describe.add_argument("--members", action="store_true", help="list members instead of partitions")
        describe.add_argument("--resets", action="store_true", help="list the group's offset resets")
        delete = actions.add_parser("delete", help="delete a group that has no members")
        delete.add_argument("group")

    def handle(self, *args, action, **options):
        getattr(self, f"do_{action}")(**options)

    def do_list(self, **options):
        summaries = selectors.group_summaries()
        self.table(["GROUP", "STATE", "MEMBERS", "GENERATION"], [[g.name, g.state, g.members, g.generation] for g in summaries])

    def do_describe(self, *, group, members, resets, **options):
        names = [group] if group else [g.name for g in selectors.group_summaries()]
        for name in names:
            if members:
                self.table(
                    ["GROUP", "MEMBER-ID", "HOST", "CLIENT-ID", "TOPICS", "LAST-HEARTBEAT"],
                    [[name, m.id, m.host, m.client_id, ",".join(m.topics), m.last_heartbeat.isoformat(timespec="seconds")]
                     for m in selectors.group_members(name)],
                )
            elif resets:
                self.table(
                    ["GROUP", "TOPIC", "PARTITION", "BEFORE", "AFTER", "SCENARIO", "BY", "AT"],
                    [[r.group_name, r.topic_name, r.partition, r.before, r.after, r.scenario, r.actor,
                      r.created_at.isoformat(timespec="seconds")] for r in selectors.offset_resets(name)],
                )
            else:
                rows = selectors.group_partitions(name)
                self.table(
                    ["GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG", "CONSUMER-ID", "HOST", "CLIENT-ID"],
                    [[r.group, r.topic, r.partition, r.current_offset, r.log_end_offset, r.lag, r.member_id, r.host,
                      r.client_id] for r in rows],
                )
            self.stdout.write("")

    def do_delete(self, *, group, **options):
        try:
            row = models.ConsumerGroup.objects.get(name=group)
        except models.ConsumerGroup.DoesNotExist:
            raise exceptions.GroupNotFound(group=group) from None
        if row.members.exists():
            raise CommandError(f"group {group!r} has live members; stop them first", returncode=2)
        row.delete()
        self.stdout.write(f"Deleted group {group}.")
