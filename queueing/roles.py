"""The role of this process (which group's worker it is), named on every log line it writes.

A worker process serves one group (or one task queue, whose share group has the queue's topic's
name); `serve` runs several side by side with one output, so each line says whose it is. Imports
nothing: settings' LOGGING names RoleFilter before the apps are loaded.
"""
import logging

_role = ""


def set_role(role):
    """Name this process's role on its log lines from now on ("" names none)."""
    global _role
    _role = role


class RoleFilter(logging.Filter):
    """Give each record a `role` attribute: "[group billing] ", or "" outside a worker."""

    def filter(self, record):
        record.role = f"[{_role}] " if _role else ""
        return True
