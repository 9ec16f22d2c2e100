"""A share-group member run as its own process by the share-group acceptance tests.

Usage: share_agent.py GROUP TOPIC NAME [hold]. With "hold" it acquires one batch and then hangs
(a stuck handler) until it is killed. Every record is "processed" by inserting an effect row in
the same transaction that acknowledges it, so an effect exists exactly when an accept committed.
Records whose value starts with b"poison" always fail, to exercise retries and dead letters.
"""
import os
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django  # noqa: E402

django.setup()

from django.db import connection, transaction  # noqa: E402

from queueing import loops, share  # noqa: E402


def main(group, topic, name, mode=""):
    member = share.ShareConsumer(group, [topic], auto_offset_reset="earliest", max_records=20, client_id=name)
    if mode == "hold":
        while not member.poll(timeout=0.5):
            pass
        threading.Event().wait()
    stopping = []
    with loops.on_stop(lambda: stopping.append(True)):
        while not stopping:
            records = member.poll(timeout=0.5)
            good = [r for r in records if not r.value.startswith(b"poison")]
            for record in records:
                if record not in good:
                    member.fail(record, error="poison")
            with transaction.atomic():
                with connection.cursor() as cursor:
                    for record in good:
                        cursor.execute(
                            "INSERT INTO share_effects (value, member, delivery) VALUES (%s, %s, %s)",
                            [record.value.decode(), name, record.delivery_count],
                        )
                    for record in good:
                        member.accept(record)
                    refused = member.flush()
                    for record in refused:
                        # The lock was lost: this delivery's effect must not count.
                        if record in good:
                            cursor.execute(
                                "DELETE FROM share_effects WHERE value = %s AND member = %s AND delivery = %s",
                                [record.value.decode(), name, record.delivery_count],
                            )
    member.close()


if __name__ == "__main__":
    main(*sys.argv[1:5])
