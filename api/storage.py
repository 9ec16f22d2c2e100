"""Raw SQL of the API (throttle counts), on Django's connection."""
from django.db import connection

from api.sql import queries

PRUNE_BATCH = 100


def count_request(scope, ident, window_s):
    """Count a request in the current window; return (count including this one, seconds left in it).

    A request's first count in a window also prunes up to PRUNE_BATCH ended windows, so the table
    stays about as large as the number of credentials seen in the longest window.
    """
    with connection.cursor() as cursor:
        cursor.execute(queries["count_request"], {"scope": scope, "ident": ident[:255], "window_s": window_s})
        hits, left = cursor.fetchone()
        if hits == 1:
            cursor.execute(queries["prune_counts"], {"limit": PRUNE_BATCH})
    return hits, float(left)
