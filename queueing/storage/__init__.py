"""The only package of the engine that runs raw SQL, one module per concept; the log's functions
are re-exported here because every layer uses them."""
from queueing.storage.log import (  # noqa: F401
    append_partitions,
    append_records,
    append_one_selected,
    append_selected,
    commit_and_fetch,
    commit_offsets,
    cursor,
    execute,
    fetch_records,
    offset_for_timestamp,
    run,
)
from queueing.storage.wakeups import ask_for_wakeups, stop_waiting, wait_for_writers  # noqa: F401,E402
