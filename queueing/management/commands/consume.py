"""manage.py consume TOPIC --group G: print records as a group member (kafka-console-consumer)."""
import json
import logging
import time
import uuid

from queueing import consumer, groups, loops, types
from queueing.management.base import EngineCommand, positive


class Command(EngineCommand):
    help = "Print the records of TOPIC as a member of a consumer group, committing what was printed."

    def add_arguments(self, parser):
        parser.add_argument("topic", nargs="+")
        parser.add_argument("--group", help="consumer group (default: a new console-consumer-… group of this run "
                                                 "alone, deleted when it ends, as Kafka expires an empty group)")
        parser.add_argument("--from-beginning", action="store_true", help="a new group starts at the earliest offset")
        parser.add_argument("--max-messages", type=positive, help="exit after this many records")
        parser.add_argument("--timeout-ms", type=positive, help="exit when no record came for this long")
        parser.add_argument("--print-key", action="store_true")
        parser.add_argument("--print-offset", action="store_true", help="prefix TOPIC-PARTITION@OFFSET")
        parser.add_argument("--print-headers", action="store_true")

    def handle(self, *args, topic, group, from_beginning, max_messages, timeout_ms, **options):
        if options["verbosity"] < 2:
            # Membership changes are noise on a console that prints records; -v 2 shows them.
            logging.getLogger("sluice").setLevel(logging.WARNING)
        anonymous = group is None
        group = group or f"{groups.CONSOLE_PREFIX}{uuid.uuid4().hex[:8]}"
        reset = types.OffsetReset.EARLIEST if from_beginning else types.OffsetReset.LATEST
        member = consumer.Consumer(
            group, topic, auto_offset_reset=reset, enable_auto_commit=False, client_id="console-consumer"
        )
        printed = 0
        stopping = []
        last_record = time.monotonic()
        with loops.on_stop(lambda: stopping.append(True)):
            try:
                while not stopping and (max_messages is None or printed < max_messages):
                    records = member.poll(timeout=0.5)
                    if max_messages is not None:
                        records = records[: max_messages - printed]
                    for record in records:
                        self._print(record, options)
                    # A reader (`| head -1`) sees records as they come; a closed pipe fails here,
                    # before the commit, and ends the run quietly (EngineCommand).
                    self.stdout.flush()
                    printed += len(records)
                    if records:
                        last_record = time.monotonic()
                        member.commit({
                            types.TopicPartition(topic=r.topic, partition=r.partition): r.offset + 1 for r in records
                        })
                    elif timeout_ms and time.monotonic() - last_record >= timeout_ms / 1000:
                        break
            finally:
                member.close(commit=False)
                if anonymous:
                    groups.delete_if_empty(group)
        self.stderr.write(f"Processed a total of {printed} message(s) in group {group}.")

    def _print(self, record, options):
        parts = []
        if options["print_offset"]:
            parts.append(f"{record.topic}-{record.partition}@{record.offset}")
        if options["print_headers"]:
            parts.append(json.dumps(record.headers, separators=(",", ":")))
        if options["print_key"]:
            parts.append("null" if record.key is None else record.key_text)
        value = record.value
        parts.append("null" if value is None else value.decode("utf-8", errors="replace"))
        self.stdout.write("\t".join(parts))
