"""Health checks for probes: the process answers (live), the database answers and is migrated (ready)."""
import functools

from django.db import DatabaseError, connections
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.recorder import MigrationRecorder


@functools.cache
def _known_migrations():
    """Every migration this code ships (read from disk once: it cannot change while the process runs)."""
    return frozenset(MigrationLoader(None, ignore_no_migrations=True).graph.nodes)


def problems(alias="default"):
    """Return why the database `alias` is not ready (unreachable, migrations not applied), or []."""
    try:
        applied = set(MigrationRecorder(connections[alias]).applied_migrations())
    except DatabaseError as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        return [f"database unreachable: {first}"]
    missing = sorted(_known_migrations() - applied)
    if missing:
        shown = ", ".join(f"{app}.{name}" for app, name in missing[:5])
        return [f"{len(missing)} migration(s) not applied: {shown}{', ...' if len(missing) > 5 else ''}"]
    return []
