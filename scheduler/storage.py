"""The only module of the task layer that runs raw SQL, on Django's connection (so it joins the
caller's transaction)."""
from django.db import connection

from scheduler.sql import queries


def prune_results(*, keep_s, limit):
    """Delete up to limit tasks finished more than keep_s seconds ago; return how many went."""
    with connection.cursor() as cursor:
        cursor.execute(queries["prune_results"], {"keep_s": keep_s, "limit": limit})
        return cursor.rowcount
