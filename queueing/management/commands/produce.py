"""manage.py produce TOPIC: send each line of standard input as a record (kafka-console-producer)."""
import json
import os
import sys

from django.core.management.base import CommandError

from queueing import exceptions, producer, topics, types
from queueing.management.base import EngineCommand, positive


class Command(EngineCommand):
    help = (
        "Send each line of standard input to TOPIC as one record. A line is bytes: its value (and its key, "
        "with --key-separator) is stored exactly as read, whatever the encoding; only --json needs UTF-8 text. "
        "Lines are sent in batches as they come, so a bad line stops the run after the batches before it."
    )

    def add_arguments(self, parser):
        parser.add_argument("topic")
        parser.add_argument("--key", help="the key of every record")
        parser.add_argument("--key-separator", help="read each line as KEY<SEP>VALUE (Kafka's parse.key)")
        parser.add_argument("--partition", type=int, help="send to this partition instead of partitioning by key")
        parser.add_argument("--header", action="append", default=[], metavar="NAME=VALUE", help="repeatable")
        parser.add_argument("--json", action="store_true", help="each value is a JSON document")
        parser.add_argument("--acks", choices=[a.value for a in types.Acks], default=types.Acks.ALL)
        parser.add_argument("--batch-size", type=positive, default=500, help="lines per send_batch")
        parser.add_argument("--idempotent", action="store_true", help="retry lost sends without duplicates")

    def handle(self, *args, topic, key, key_separator, partition, header, json, acks, batch_size, idempotent, **options):
        if key is not None and key_separator is not None:
            raise CommandError("give --key or --key-separator, not both", returncode=2)
        headers = self._headers(header)
        # Before reading: an empty input must not pass for a send to a topic that is not there.
        info = topics.get_topic(topic)
        if partition is not None and not 0 <= partition < info.partition_count:
            raise exceptions.PartitionNotFound(topic=topic, partition=partition)
        sender = producer.Producer(idempotent=idempotent, acks=acks, client_id="console-producer")
        sent = 0
        batch = []
        for number, line in enumerate(sys.stdin.buffer, start=1):
            line = line.rstrip(b"\n")
            if not line:
                continue
            try:
                batch.append(self._parse(number, line, key, key_separator, json))
            except CommandError as error:
                raise CommandError(f"{error}{self._before(sent, topic)}", returncode=2) from None
            if len(batch) >= batch_size:
                sent += self._send(sender, topic, batch, headers, partition)
                batch = []
        if batch:
            sent += self._send(sender, topic, batch, headers, partition)
        self.stderr.write(f"Produced {sent} record(s) to {topic}.")

    @staticmethod
    def _before(sent, topic):
        return f" ({sent} record(s) before it were produced to {topic})" if sent else " (nothing was produced)"

    def _headers(self, pairs):
        headers = {}
        for pair in pairs:
            name, sep, value = pair.partition("=")
            if not sep or not name:
                raise CommandError(f"--header {pair!r}: expected NAME=VALUE", returncode=2)
            headers[name] = value
        return headers

    def _parse(self, number, line, key, separator, as_json):
        """Return (key, value) of one line of bytes; the key and value stay bytes unless --json."""
        key = None if key is None else os.fsencode(key)
        if separator is not None:
            key, sep, value = line.partition(os.fsencode(separator))
            if not sep:
                raise CommandError(f"line {number}: no key separator {separator!r}")
        else:
            value = line
        if not as_json:
            return key, value
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            raise CommandError(f"line {number}: not UTF-8 text, which --json needs") from None
        try:
            return key, json.loads(text)
        except ValueError as error:
            if separator is not None and _is_json(line):
                raise CommandError(f"line {number}: no key separator {separator!r} before the JSON value "
                                   f"(the whole line is one JSON document)") from None
            raise CommandError(f"line {number}: not JSON: {error}") from None

    def _send(self, sender, topic, batch, headers, partition):
        sender.send_batch(
            topic, [v for _, v in batch], keys=[k for k, _ in batch], headers=headers or None, partition=partition
        )
        return len(batch)


def _is_json(line):
    try:
        json.loads(line)
    except ValueError:
        return False
    return True
