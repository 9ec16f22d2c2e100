"""manage.py groups list|describe|delete: Kafka's kafka-consumer-groups for Sluice."""
from django.core.management.base import CommandError

from queueing import groups, models, selectors, share
from queueing.management.base import EngineCommand, positive


class Command(EngineCommand):
    help = "List consumer groups, describe their offsets and lag, or delete an empty group."

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True, metavar="{list,describe,delete,configure}")
        actions.add_parser("list", help="list consumer groups")
        describe = actions.add_parser("describe", help="offsets, lag and members of a group")
        describe.add_argument("group", nargs="?", help="default: every group")
        shown = describe.add_mutually_exclusive_group()
        shown.add_argument("--members", action="store_true", help="list members instead of partitions")
        shown.add_argument("--resets", action="store_true", help="list the group's offset resets")
        delete = actions.add_parser("delete", help="delete a group that has no members")
        delete.add_argument("group")
        configure = actions.add_parser("configure", help="set a group's delivery limit, back-off and dead-letter topic")
        configure.add_argument("group")
        configure.add_argument("--share", dest="is_share", action="store_true", help="a share group (default: an ordered group)")
        configure.add_argument("--delivery-limit", type=positive)
        configure.add_argument("--backoff", choices=[b.value for b in models.Backoff])
        configure.add_argument("--backoff-base-ms", type=positive)
        configure.add_argument("--backoff-max-ms", type=positive)
        configure.add_argument("--backoff-levels-ms", help="comma-separated delays, e.g. 1000,5000,30000")
        configure.add_argument("--dead-letter-topic")
        configure.add_argument("--lock-duration-ms", type=positive, help="share groups: how long a record is held")

    def handle(self, *args, action, **options):
        getattr(self, f"do_{action}")(**options)

    def do_list(self, **options):
        rows = [[g.name, "ordered", g.state, g.members, g.generation] for g in selectors.group_summaries()]
        rows += [[g.name, "share", g.state, g.members, "-"] for g in selectors.share_group_summaries()]
        self.table(["GROUP", "TYPE", "STATE", "MEMBERS", "GENERATION"], sorted(rows))

    def do_describe(self, *, group, members, resets, **options):
        if group and not models.ConsumerGroup.objects.filter(name=group).exists():
            if models.ShareGroup.objects.filter(name=group).exists():
                if resets:
                    raise CommandError(f"{group!r} is a share group: it has no offsets to reset, so no resets",
                                       returncode=2)
                return self._describe_share(group, members)
        names = [group] if group else [g.name for g in selectors.group_summaries()]
        # Every group: the ordered ones, then the share ones (which have no offset resets to list).
        share_names = [] if group or resets else [g.name for g in selectors.share_group_summaries()]
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
        for name in share_names:
            self._describe_share(name, members)
            self.stdout.write("")

    def _describe_share(self, name, members):
        if members:
            self.table(
                ["GROUP", "MEMBER-ID", "HOST", "CLIENT-ID", "TOPICS", "LAST-SEEN"],
                [[name, m.id, m.host, m.client_id, ",".join(m.topics), m.last_heartbeat.isoformat(timespec="seconds")]
                 for m in selectors.share_group_members(name)],
            )
            return
        self.table(
            ["GROUP", "TOPIC", "PARTITION", "START-OFFSET", "LOG-END-OFFSET", "LAG", "ACQUIRED", "AVAILABLE",
             "MAX-DELIVERIES", "DEAD-LETTERED"],
            [[r.group, r.topic, r.partition, r.start_offset, r.log_end_offset, r.lag, r.acquired, r.available,
              r.max_delivery_count, r.dead_lettered] for r in selectors.share_group_partitions(name)],
        )

    def do_configure(self, *, group, is_share, lock_duration_ms=None, backoff_levels_ms=None, **options):
        policy = {k: options[k] for k in ("delivery_limit", "backoff", "backoff_base_ms", "backoff_max_ms",
                                           "dead_letter_topic") if options.get(k) is not None}
        if backoff_levels_ms is not None:
            try:
                policy["backoff_levels_ms"] = [int(v) for v in backoff_levels_ms.split(",")]
            except ValueError:
                raise CommandError("--backoff-levels-ms takes whole numbers separated by commas", returncode=2) from None
        if not policy and lock_duration_ms is None:
            raise CommandError("nothing to change: give --delivery-limit, --backoff..., --dead-letter-topic "
                               "or --lock-duration-ms", returncode=2)
        # configure makes a group that does not exist yet; one of the other kind by the same name
        # would stand beside it, and `describe` show only one of them.
        ordered = models.ConsumerGroup.objects.filter(name=group).exists()
        shared = models.ShareGroup.objects.filter(name=group).exists()
        if shared and not ordered and not is_share:
            raise CommandError(f"{group!r} is a share group: add --share", returncode=2)
        if ordered and not shared and is_share:
            raise CommandError(f"{group!r} is an ordered group: leave out --share", returncode=2)
        if is_share:
            share.configure_group(group, lock_duration_ms=lock_duration_ms, **policy)
        else:
            if lock_duration_ms is not None:
                raise CommandError("--lock-duration-ms is for share groups (add --share)", returncode=2)
            groups.configure_group(group, **policy)
        self.stdout.write(f"Configured {'share' if is_share else 'ordered'} group {group}.")

    def do_delete(self, *, group, **options):
        groups.delete_group(group)
        self.stdout.write(f"Deleted group {group}.")
