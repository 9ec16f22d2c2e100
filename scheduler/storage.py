"""The only module of the task layer that runs raw SQL, on Django's connection (so it joins the
caller's transaction)."""
from django.db import connection
from psycopg.types.json import Jsonb

from scheduler.sql import queries

COPY_FROM = 64  # enqueue_many writes this many tasks or more with COPY, fewer with one INSERT


def prune_results(*, keep_s, limit):
    """Delete up to limit tasks finished more than keep_s seconds ago; return how many went."""
    with connection.cursor() as cursor:
        cursor.execute(queries["prune_results"], {"keep_s": keep_s, "limit": limit})
        return cursor.rowcount


def copy_results(rows):
    """Write new TaskResult rows with COPY, in the caller's transaction; set their enqueued_at."""
    with connection.cursor() as cursor:
        cursor.execute(queries["transaction_now"])
        now = cursor.fetchone()[0]
        with connection.wrap_database_errors, cursor.cursor.copy(queries["copy_results"]) as copy:
            for row in rows:
                row.enqueued_at = now
                copy.write_row((row.id, row.task_name, row.queue, Jsonb(row.args), Jsonb(row.kwargs), row.state,
                                row.unique_key, now, row.eta, row.generation, 0, 0, 0, "", "", "", "", ""))
