"""The Celery result backend on a real PostgreSQL server: results, states, tracebacks, custom states,
a SUCCESS never overwritten, saved groups, forget, expiry, and chord counting (each member once, the
callback sent once, in the transaction that marks the chord fired)."""
import datetime
import sys

import pytest
from celery import states
from celery.app.task import Context
from celery.exceptions import ChordError
from celery.result import AsyncResult, GroupResult
from django.utils import timezone

from scheduler.compat import celery_backend, kombu_store, models
from tests.celeryapp.app import app

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def backend():
    backend = app.backend
    assert isinstance(backend, celery_backend.ResultBackend)
    backend._cache.clear()
    return backend


def request(task_id, **fields):
    return Context(id=task_id, task="tests.celeryapp.tasks.add", **fields)


def test_sluice_urls_resolve_to_the_backend():
    from celery import Celery

    for url, database in [("sluice://", ""), ("sluice+postgresql://u@h/db", "postgresql://u@h/db")]:
        backend = Celery("x", set_as_current=False, result_backend=url).backend
        assert isinstance(backend, celery_backend.ResultBackend)
        assert backend._database_url == database
    explicit = Celery("x", set_as_current=False, result_backend=celery_backend.BACKEND_PATH).backend
    assert isinstance(explicit, celery_backend.ResultBackend)
    assert explicit._database_url == ""  # no Sluice broker on a named database: Django's


def test_the_explicit_form_keeps_results_in_the_brokers_database():
    """`result_backend = "module:Class"` names no database: a Sluice broker's named one is used, in
    either of its forms, rather than whatever database the process's settings would fall back to."""
    from celery import Celery

    url = "postgresql://u@h/db"
    for conf in [{"broker_url": f"sluice+{url}"},
                 {"broker_url": url, "broker_transport": "scheduler.compat.kombu_transport:Transport"},
                 {"broker_url": url, "broker_transport": "sluice"}]:
        backend = Celery("x", set_as_current=False, result_backend=celery_backend.BACKEND_PATH, **conf).backend
        assert backend._database_url == url, conf
    for conf in [{"broker_url": "sluice://"}, {"broker_url": "amqp://guest@127.0.0.1//"}, {"broker_url": url}]:
        backend = Celery("x", set_as_current=False, result_backend=celery_backend.BACKEND_PATH, **conf).backend
        assert backend._database_url == "", conf


def test_an_unknown_task_is_pending(backend):
    result = AsyncResult("never-sent", app=app)
    assert result.state == states.PENDING
    assert result.result is None


def test_it_keeps_a_result_and_its_states(backend):
    backend.mark_as_started("t1", pid=42)
    assert AsyncResult("t1", app=app).state == states.STARTED
    assert AsyncResult("t1", app=app).info == {"pid": 42}
    backend.mark_as_done("t1", {"total": 3}, request=request("t1"))
    result = AsyncResult("t1", app=app)
    assert result.state == states.SUCCESS
    assert result.get(timeout=1) == {"total": 3}
    row = models.CeleryTaskResult.objects.get(task_id="t1")
    assert row.task_name == "tests.celeryapp.tasks.add" and row.date_done is not None


def test_a_custom_state_keeps_its_meta(backend):
    backend.store_result("t2", {"done": 2, "of": 3}, "PROGRESS")
    result = AsyncResult("t2", app=app)
    assert (result.state, result.info) == ("PROGRESS", {"done": 2, "of": 3})
    assert models.CeleryTaskResult.objects.get(task_id="t2").date_done is None


def test_a_failure_keeps_its_exception_and_traceback(backend):
    try:
        raise ValueError("no stock")
    except ValueError as error:
        traceback = "".join(__import__("traceback").format_exception(*sys.exc_info()))
        backend.mark_as_failure("t3", error, traceback=traceback, request=request("t3"))
    result = AsyncResult("t3", app=app)
    assert result.state == states.FAILURE
    assert "ValueError: no stock" in result.traceback
    with pytest.raises(ValueError, match="no stock"):
        result.get(timeout=1)


def test_a_success_is_never_overwritten(backend):
    """Guards a redelivered task (its worker was killed after storing) hiding its own result."""
    backend.mark_as_done("t4", 7, request=request("t4"))
    backend.mark_as_started("t4")
    backend.mark_as_failure("t4", ValueError("late"), request=request("t4"))
    assert AsyncResult("t4", app=app).get(timeout=1) == 7


def test_a_compressed_result_is_stored_compressed_and_read_back():
    from celery import Celery

    compressing = Celery("x", set_as_current=False, result_backend="sluice://", result_compression="gzip")
    compressing.backend.mark_as_done("zipped", "x" * 10_000, request=request("zipped"))
    stored = bytes(models.CeleryTaskResult.objects.get(task_id="zipped").meta)
    assert len(stored) < 1_000
    assert app.backend.get_task_meta("zipped")["result"] == "x" * 10_000  # a reader without compression


def test_forget_deletes_the_result(backend):
    backend.mark_as_done("t5", 1, request=request("t5"))
    AsyncResult("t5", app=app).forget()
    assert AsyncResult("t5", app=app).state == states.PENDING


def test_a_saved_group_is_restored_and_deleted(backend):
    for n, task_id in enumerate(["g-a", "g-b"]):
        backend.mark_as_done(task_id, n, request=request(task_id))
    group = GroupResult("g1", [AsyncResult("g-a", app=app), AsyncResult("g-b", app=app)], app=app)
    group.save()
    restored = GroupResult.restore("g1", app=app)
    assert [r.id for r in restored.results] == ["g-a", "g-b"]
    assert restored.get(timeout=1) == [0, 1]
    restored.delete()
    assert GroupResult.restore("g1", app=app) is None


def test_cleanup_deletes_only_what_finished_before_the_expiry(backend):
    backend.mark_as_done("old", 1, request=request("old"))
    backend.mark_as_done("new", 2, request=request("new"))
    backend.mark_as_started("running")
    GroupResult("old-group", [AsyncResult("old", app=app)], app=app).save()
    long_ago = timezone.now() - datetime.timedelta(seconds=backend.expires + 60)
    models.CeleryTaskResult.objects.filter(task_id__in=["old", "running"]).update(date_done=None)
    models.CeleryTaskResult.objects.filter(task_id="old").update(date_done=long_ago)
    models.CeleryGroupResult.objects.filter(group_id="old-group").update(saved_at=long_ago)
    backend.cleanup()
    assert set(models.CeleryTaskResult.objects.values_list("task_id", flat=True)) == {"new", "running"}
    assert not models.CeleryGroupResult.objects.exists()


def chord_request(task_id, group_id, callback):
    return request(task_id, group=group_id, chord=dict(callback))


def test_a_chord_callback_is_sent_once_when_every_member_finished(backend):
    from tests.celeryapp import tasks

    callback = tasks.gather.s("cb")
    header = GroupResult("c1", [AsyncResult(f"c1-{n}", app=app) for n in range(3)], app=app)
    backend.apply_chord(("c1", header.results), callback)
    before = kombu_store.size("celery")
    for n in range(2):
        backend.mark_as_done(f"c1-{n}", n, request=chord_request(f"c1-{n}", "c1", callback))
    # The same member again (redelivered after its worker died): counted once, nothing sent.
    backend.mark_as_done("c1-1", 1, request=chord_request("c1-1", "c1", callback))
    assert kombu_store.size("celery") == before
    backend.mark_as_done("c1-2", 2, request=chord_request("c1-2", "c1", callback))
    assert kombu_store.size("celery") == before + 1
    backend.mark_as_done("c1-2", 2, request=chord_request("c1-2", "c1", callback))
    assert kombu_store.size("celery") == before + 1
    chord = models.CeleryChord.objects.get(group_id="c1")
    assert chord.fired_at is not None and chord.parts.count() == 3


def test_a_failed_member_fails_the_chord_callback(backend):
    from tests.celeryapp import tasks

    callback = tasks.gather.s("cb").set(task_id="c2-callback")
    header = GroupResult("c2", [AsyncResult(f"c2-{n}", app=app) for n in range(2)], app=app)
    backend.apply_chord(("c2", header.results), callback)
    before = kombu_store.size("celery")
    backend.mark_as_done("c2-0", 0, request=chord_request("c2-0", "c2", callback))
    backend.mark_as_failure("c2-1", ValueError("bad"), request=chord_request("c2-1", "c2", callback))
    assert kombu_store.size("celery") == before  # no callback sent
    failed = AsyncResult("c2-callback", app=app)
    assert failed.state == states.FAILURE
    with pytest.raises(ChordError, match="c2-1"):
        failed.get(timeout=1)
