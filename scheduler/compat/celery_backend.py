"""A Celery result backend on Sluice: `result_backend = "sluice://"` (the Django database) or
`"sluice+postgresql://user@host/db"` keeps results, states, tracebacks, saved groups and chord
counts in the database.

A chord's callback is sent once: each header member is counted once (a redelivered member is not
counted again), and the member that completes the count marks the chord fired and sends the callback
in one transaction; with a Sluice broker on the same database the callback's message commits with
that mark, so a worker killed in between leaves neither behind and the redelivered member sends it.
"""
import datetime

from celery import states
from celery.app import backends as celery_backends
from celery.backends.base import BaseBackend
from celery.canvas import maybe_signature
from celery.exceptions import ChordError
from celery.result import GroupResult, allow_join_result, result_from_tuple
from celery.utils.log import get_logger
from kombu.utils.encoding import bytes_to_str, ensure_bytes

from scheduler.compat import kombu_transport

logger = get_logger("sluice.celery")

ALIAS = "sluice"
BACKEND_PATH = "scheduler.compat.celery_backend:ResultBackend"


def register():
    """Make `result_backend = "sluice://..."` resolve to this backend in this process (the
    `celery.result_backends` entry point does it for an installed Sluice)."""
    celery_backends.BACKEND_ALIASES[ALIAS] = BACKEND_PATH


register()


def database_url(url, app):
    """The database the backend keeps results in: the one `sluice+postgresql://...` names; for
    `sluice://`, the Django database (""); for the explicit form (no URL), that of a Sluice broker
    on a named database (`sluice+postgresql://...`, or `postgresql://...` with broker_transport
    naming this transport), else the Django database. So a program outside the project that names
    its database in the broker keeps results there too, in every process, pool children included."""
    if url:
        return url if url.startswith(("postgres://", "postgresql://")) else ""
    broker = app.conf.broker_url or ""
    if isinstance(broker, str) and broker.startswith(f"{kombu_transport.ALIAS}+"):
        broker = broker.split("+", 1)[1]
    elif app.conf.broker_transport not in (kombu_transport.ALIAS, kombu_transport.TRANSPORT_PATH):
        return ""
    return broker if isinstance(broker, str) and broker.startswith(("postgres://", "postgresql://")) else ""


class ResultBackend(BaseBackend):
    """Celery's results in PostgreSQL. `cleanup()` (Celery beat's daily `celery.backend_cleanup`)
    deletes results finished more than `result_expires` ago."""

    subpolling_interval = 0.05  # ResultSet.join's pause between members: a read is one indexed query
    supports_autoexpire = False  # so beat schedules celery.backend_cleanup
    persistent = True
    supports_result_compression = True  # the encoded meta is stored as bytes, unchanged

    def __init__(self, app, url=None, **kwargs):
        super().__init__(app, url=url, **kwargs)
        self._database_url = database_url(url, app)
        self._store = None

    @property
    def store(self):
        if self._store is None:
            kombu_transport.ensure_django(self._database_url)
            from scheduler.compat import celery_store

            self._store = celery_store
        return self._store

    def exception_safe_to_retry(self, exc):
        from django.db import InterfaceError, OperationalError

        return isinstance(exc, (InterfaceError, OperationalError))

    def on_backend_retryable_error(self, exc):
        from django.db import connection

        connection.close()  # the next query opens a new one

    # Tasks.

    def _store_result(self, task_id, result, state, traceback=None, request=None, **kwargs):
        meta = self._get_result_meta(result=result, state=state, traceback=traceback, request=request)
        meta["task_id"] = bytes_to_str(task_id)
        self.store.store_result(
            task_id=bytes_to_str(task_id), status=state, content_type=self.content_type,
            meta=ensure_bytes(self.encode(meta)), task_name=getattr(request, "task", None) or "",
            group_id=getattr(request, "group", None) or "", traceback=traceback or "",
            done=state in states.READY_STATES,
        )
        return result

    def _get_task_meta_for(self, task_id):
        found = self.store.task_meta(bytes_to_str(task_id))
        if found is None:
            return {"status": states.PENDING, "result": None}
        return self.decode_result(found[1])

    def _forget(self, task_id):
        self.store.forget(bytes_to_str(task_id))

    # Groups.

    def _save_group(self, group_id, result):
        self.store.save_group(group_id, content_type=self.content_type,
                              meta=ensure_bytes(self.encode({"result": result.as_tuple()})))
        return result

    def _restore_group(self, group_id):
        found = self.store.group_meta(group_id)
        if found is None:
            return None
        meta = self.decode(found[1])
        meta["result"] = result_from_tuple(meta["result"], self.app)
        return meta

    def _delete_group(self, group_id):
        self.store.delete_group(group_id)

    # Chords.

    def apply_chord(self, header_result_args, body, **kwargs):
        self.ensure_chords_allowed()
        header_result = self.app.GroupResult(*header_result_args)
        header_result.save(backend=self)
        self.store.start_chord(header_result.id, len(header_result.results))

    def set_chord_size(self, group_id, chord_size):
        self.store.set_chord_size(group_id, chord_size)

    def on_chord_part_return(self, request, state, result, **kwargs):
        group_id = getattr(request, "group", None)
        if not group_id or not request.chord:
            return
        from django.db import transaction

        callback = maybe_signature(request.chord, app=self.app)
        with transaction.atomic():
            if not self.store.finish_part(group_id, request.id, request.chord.get("chord_size")):
                return
            self._send_callback(group_id, callback)

    def _send_callback(self, group_id, callback):
        """Join the complete header and send the callback (or fail it with a ChordError)."""
        header = GroupResult.restore(group_id, backend=self)
        if header is None:
            return self.chord_error_from_stack(callback, ChordError(f"GroupResult {group_id} no longer exists"))
        try:
            with allow_join_result():
                values = header.join(timeout=self.app.conf.result_chord_join_timeout, propagate=True,
                                     interval=self.subpolling_interval)
        except Exception as exc:
            culprit = next((r for r in header.results if r.state in states.PROPAGATE_STATES), None)
            reason = f"Dependency {culprit.id} raised {exc!r}" if culprit is not None else repr(exc)
            logger.error("Chord %r raised: %s", group_id, reason)
            return self.chord_error_from_stack(callback, ChordError(reason))
        callback.delay(values)

    # Expiry.

    def cleanup(self):
        if not self.expires:
            return
        removed = self.store.cleanup(older_than=datetime.timedelta(seconds=self.expires))
        logger.info("Celery results expired: %(results)d results, %(groups)d groups, %(chords)d chords", removed)
