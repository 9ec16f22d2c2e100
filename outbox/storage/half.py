"""Raw SQL of half messages: the check-back loop's claim."""
from django.db import connection

from outbox.sql import queries


def claim_due_checks(*, limit):
    """Return the ids of up to limit half messages whose check-back is due, claimed (autocommit)."""
    with connection.cursor() as cursor:
        cursor.execute(queries["claim_due_checks"], {"limit": limit})
        return [row[0] for row in cursor.fetchall()]
