"""Producer and consumer processes for the log's fault tests; each writes a history for the checker.

Usage: log_agents.py produce NAME TOPIC COUNT LOG | consume NAME TOPIC GROUP DONE_FILE LOG
Lines are flushed as they are written, so a process killed with SIGKILL loses none it wrote.
"""
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django  # noqa: E402

django.setup()

from django.db import InterfaceError, OperationalError, connection, transaction  # noqa: E402

from queueing import consumer, exceptions, loops, producer  # noqa: E402

KEYS = 8


class Rollback(Exception):
    pass


def produce(name, topic, count, log):
    sender = producer.Producer(idempotent=True, client_id=name)
    with open(log, "a", buffering=1) as out:
        for i in range(int(count)):
            ident = f"{name}-{i}"
            key = f"{name}.k{i % KEYS}"
            if i % 10 == 9:
                # Sent in a transaction that rolls back: it must never be read.
                out.write(f"aborted {ident}\n")
                try:
                    with transaction.atomic():
                        producer.send(topic, ident.encode(), key=key)
                        raise Rollback
                except Rollback:
                    pass
                except (OperationalError, InterfaceError):
                    connection.close()
                continue
            out.write(f"invoke {ident} {key}\n")
            try:
                meta = sender.send(topic, ident.encode(), key=key)
                out.write(f"ok {ident} {meta.partition} {meta.offset}\n")
            except (OperationalError, InterfaceError):
                out.write(f"fail {ident}\n")  # unknown outcome: the send may or may not be stored
                connection.close()


def consume(name, topic, group, done_file, log):
    member = consumer.Consumer(group, [topic], auto_offset_reset="earliest", enable_auto_commit=False,
                               max_poll_records=50, client_id=name)
    stopping = []
    quiet_since = None
    with loops.on_stop(lambda: stopping.append(True)), open(log, "a", buffering=1) as out:
        while not stopping:
            try:
                records = member.poll(timeout=0.3)
                generation = member.assignment.generation
                for record in records:
                    out.write(f"read {name} {generation} {record.partition} {record.offset} {record.value.decode()}\n")
                if records:
                    quiet_since = None
                    try:
                        member.commit()
                    except exceptions.CommitFailed:
                        pass  # the group moved on; the new owner reads these again
                else:
                    quiet_since = quiet_since or time.monotonic()
                    if os.path.exists(done_file) and time.monotonic() - quiet_since > 3:
                        break
            except (OperationalError, InterfaceError):
                connection.close()
                member.rewind()
                time.sleep(0.2)
    member.close(commit=False)


if __name__ == "__main__":
    {"produce": produce, "consume": consume}[sys.argv[1]](*sys.argv[2:])
