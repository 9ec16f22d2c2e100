"""manage.py topics create|list|describe|alter|delete|delete-records: Kafka's kafka-topics (and
kafka-delete-records) for Sluice."""
from django.core.management.base import CommandError

from django.db import transaction

from queueing import retention, retries, topics
from queueing.management.base import EngineCommand, positive


class Command(EngineCommand):
    help = "Create, list, describe, alter and delete topics."

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True, metavar="{create,list,describe,alter,delete,delete-records}")
        create = actions.add_parser("create", help="create a topic")
        create.add_argument("name")
        self._settings(create)
        actions.add_parser("list", help="list topics")
        describe = actions.add_parser("describe", help="show a topic's partitions and offsets")
        describe.add_argument("name", nargs="?", help="default: every topic")
        alter = actions.add_parser("alter", help="add partitions or change retention and size limits")
        alter.add_argument("name")
        self._settings(alter)
        delete = actions.add_parser("delete", help="delete a topic and all its records")
        delete.add_argument("name")
        delete.add_argument("--yes", action="store_true",
                            help="do not ask for confirmation (required when standard input is not a terminal)")

        purge = actions.add_parser("delete-records", help="delete a dead-letter topic's records below an offset")
        purge.add_argument("name")
        purge.add_argument("--before", type=int, metavar="OFFSET",
                           help="delete the records below this offset (default: every record, up to the log end)")
        purge.add_argument("--partition", type=int, action="append", dest="partitions", metavar="P",
                           help="only this partition (repeatable; default: every partition)")
        purge.add_argument("--any-topic", action="store_true",
                           help="allow a topic that is not a dead-letter topic")
        purge.add_argument("--yes", action="store_true",
                           help="do not ask for confirmation (required when standard input is not a terminal)")

    def _settings(self, parser):
        parser.add_argument("--partitions", type=positive)
        parser.add_argument("--retention-ms", type=positive, help="keep records this long (default: forever)")
        parser.add_argument("--retention-bytes", type=positive, help="per-partition size limit")
        parser.add_argument("--max-message-bytes", type=positive)
        parser.add_argument("--cleanup-policy", choices=["delete", "compact"],
                            help="compact: keep the newest record per key (every record needs a key)")
        parser.add_argument("--delivery-limit", type=positive, help="deliveries before dead-lettering")
        parser.add_argument("--dead-letter-topic", help="default: <group>.DLQ")

    def handle(self, *args, action, **options):
        getattr(self, f"do_{action.replace('-', '_')}")(**options)

    def _config(self, options):
        return {
            "partitions": options["partitions"],
            "retention_ms": options["retention_ms"],
            "retention_bytes": options["retention_bytes"],
            "max_message_bytes": options["max_message_bytes"],
            "cleanup_policy": options.get("cleanup_policy"),
        }

    def _policy(self, options):
        return {k: options[k] for k in ("delivery_limit", "dead_letter_topic") if options.get(k) is not None}

    def do_create(self, *, name, **options):
        retries.validate(**self._policy(options))
        with transaction.atomic():
            info = topics.create_topic(name, **self._config(options))
            if self._policy(options):
                retries.configure_topic(name, **self._policy(options))
        self.stdout.write(f"Created topic {info.name} with {info.partition_count} partition(s).")

    def do_list(self, **options):
        for info in topics.list_topics():
            self.stdout.write(info.name)

    def do_describe(self, *, name, **options):
        names = [name] if name else [t.name for t in topics.list_topics()]
        for topic_name in names:
            info, partitions = topics.describe_topic(topic_name)
            self.stdout.write(
                f"Topic: {info.name}\tPartitionCount: {info.partition_count}\t"
                f"RetentionMs: {info.retention_ms or 'forever'}\tRetentionBytes: {info.retention_bytes or 'unlimited'}\t"
                f"MaxMessageBytes: {info.max_message_bytes}\tCleanupPolicy: {info.cleanup_policy}"
            )
            self.table(
                ["PARTITION", "LOG-START-OFFSET", "LOG-END-OFFSET", "RECORDS", "SIZE-BYTES"],
                [
                    [p.partition, p.log_start_offset, p.log_end_offset, p.log_end_offset - p.log_start_offset, p.size_bytes]
                    for p in partitions
                ],
            )

    def do_alter(self, *, name, **options):
        config = self._config(options)
        policy = self._policy(options)
        if all(v is None for v in config.values()) and not policy:
            raise CommandError("nothing to change: give --partitions, --retention-ms, --retention-bytes, "
                               "--max-message-bytes, --delivery-limit or --dead-letter-topic", returncode=2)
        retries.validate(**policy)
        with transaction.atomic():
            info = topics.alter_topic(name, **config) if any(v is not None for v in config.values()) else topics.get_topic(name)
            if policy:
                retries.configure_topic(name, **policy)
        self.stdout.write(f"Altered topic {info.name}: {info.partition_count} partition(s).")

    def do_delete(self, *, name, yes, **options):
        topics.get_topic(name)
        if not yes:
            # A stray line in a script must not drop a topic: without a terminal to ask, refuse.
            if not self.stdin_is_tty():
                raise CommandError(f"topic {name} not deleted: standard input is not a terminal to confirm on; "
                                   "add --yes", returncode=2)
            answer = input(f"Delete topic {name} and all its records? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                raise CommandError("not deleted", returncode=1)
        topics.delete_topic(name)
        self.stdout.write(f"Deleted topic {name}.")

    def do_delete_records(self, *, name, before, partitions, any_topic, yes, **options):
        info = topics.get_topic(name)
        if not any_topic and not retries.is_dead_letter_topic(info.name):
            raise CommandError(f"{name} is not a dead-letter topic: add --any-topic to delete its records",
                               returncode=2)
        what = "every record" if before is None else f"the records below offset {before}"
        where = "every partition" if not partitions else "partition(s) " + ", ".join(map(str, partitions))
        self._confirm(f"Delete {what} of {name}, {where}? [y/N] ", yes, f"records of {name} not deleted")
        for done in retention.delete_records(name, before=before, partitions=partitions, any_topic=any_topic):
            self.stdout.write(f"{name}-{done.partition}: log start {done.old_start} -> {done.new_start}, "
                              f"{done.deleted} record(s) deleted")

    def _confirm(self, question, yes, refused):
        if yes:
            return
        # A stray line in a script must not delete records: without a terminal to ask, refuse.
        if not self.stdin_is_tty():
            raise CommandError(f"{refused}: standard input is not a terminal to confirm on; add --yes", returncode=2)
        if input(question).strip().lower() not in ("y", "yes"):
            raise CommandError("not deleted", returncode=1)

    @staticmethod
    def stdin_is_tty():
        import sys

        return sys.stdin.isatty()
