"""Handlers of a sample app, used by the tests that start `manage.py worker` processes."""
import os

from queueing import registry


@registry.handler("sample.events", group="sample")
def record_event(record):
    """Append topic-partition-offset and the value to the file named by SAMPLE_OUT."""
    with open(os.environ["SAMPLE_OUT"], "a") as out:
        out.write(f"{record.partition} {record.offset} {record.value.decode()}\n")
        out.flush()
        os.fsync(out.fileno())
