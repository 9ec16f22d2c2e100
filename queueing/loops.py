"""The shape every long-running loop shares: a stop event, run_once() -> bool, and run() with signal
handling, reconnection after a lost database connection, and an orderly shutdown."""
import contextlib
import logging
import signal
import threading

import psycopg
from django.db import InterfaceError, OperationalError, connection

from queueing import roles

logger = logging.getLogger("sluice.loops")
CONNECTION_ERRORS = (OperationalError, InterfaceError, psycopg.OperationalError)


@contextlib.contextmanager
def on_stop(callback):
    """Call callback on SIGTERM and SIGINT while inside; restore the old handlers after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    for sig in previous:
        signal.signal(sig, lambda signum, frame: callback())
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class Loop:
    """Subclasses give run_once() (True: more work is likely, loop at once) and may override wait()
    (default: the stop event for `interval` seconds), reconnected(), recover() and close()."""

    name = "loop"
    role = ""  # what the process's log lines are tagged with while this loop runs (see roles)
    interval = 1.0

    def __init__(self):
        self.stop_event = threading.Event()

    def run_once(self):
        raise NotImplementedError

    def wait(self):
        self.stop_event.wait(self.interval)

    def reconnected(self):
        """Called after the database connection was lost and closed."""

    def recover(self, error):
        """Handle an error run_once() raised; return False to let it propagate."""
        return False

    def close(self):
        """Release what the loop holds (called once, on the way out)."""

    def run(self):
        if self.role:
            roles.set_role(self.role)
        logger.info("%s starting", self.name)
        with on_stop(self.stop):
            try:
                while not self.stop_event.is_set():
                    try:
                        if not self.run_once():
                            self.wait()
                    except CONNECTION_ERRORS as error:
                        logger.warning("%s: database connection lost (%s); reconnecting", self.name, error)
                        connection.close()
                        self.reconnected()
                        self.stop_event.wait(1.0)
                    except Exception as error:
                        if not self.recover(error):
                            raise
            finally:
                logger.info("%s stopping", self.name)
                with contextlib.suppress(*CONNECTION_ERRORS):
                    self.close()
                connection.close()
                logger.info("%s stopped", self.name)

    def stop(self):
        self.stop_event.set()
