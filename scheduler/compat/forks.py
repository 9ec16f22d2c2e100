"""Fork safety: a child forked from a process holding PostgreSQL connections (a Celery prefork pool
process) must neither use nor close them, as they are the parent's sessions."""
import gc
import os

import psycopg


def _forget_inherited():
    """In a forked child, point every inherited PostgreSQL socket at /dev/null and drop Django's
    connections: the parent's sessions must not hear from the child (not even the Terminate a
    garbage-collected connection sends), and the child opens its own."""
    try:
        devnull = os.open(os.devnull, os.O_RDWR)
    except OSError:
        return
    try:
        for item in gc.get_objects():
            # type(), not isinstance(): isinstance reads __class__, which sets up a lazy object
            # (Django's unconfigured settings in a program outside a project raise from it).
            if issubclass(type(item), psycopg.Connection) and not item.closed:
                try:
                    os.dup2(devnull, item.pgconn.socket)
                except (OSError, psycopg.Error):
                    pass
    finally:
        os.close(devnull)
    from django.conf import settings

    if settings.configured:
        from django.db import connections

        for wrapper in connections.all(initialized_only=True):
            wrapper.connection = None
            wrapper.in_atomic_block = False
            wrapper.savepoint_ids = []
            wrapper.needs_rollback = False


_registered = False


def forget_connections_in_children():
    """Have every child forked from now on drop the connections it inherits (called by each
    transport made, so only processes that use one pay for the scan at each fork)."""
    global _registered
    if not _registered:
        os.register_at_fork(after_in_child=_forget_inherited)
        _registered = True
