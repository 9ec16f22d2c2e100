"""The Sluice side of the Celery result backend: task results, saved groups and chord counts in the
database (imported once Django is set up; celery_backend sees to it)."""
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from scheduler.compat import models

SUCCESS = "SUCCESS"

# One statement: the insert and the "never overwrite a SUCCESS" check cannot race with another
# worker's store of the same task (a redelivered run reporting STARTED after the first one won).
_STORE = f"""
INSERT INTO {models.CeleryTaskResult._meta.db_table}
    (task_id, status, task_name, group_id, content_type, meta, traceback, updated_at, date_done)
VALUES (%(task_id)s, %(status)s, %(task_name)s, %(group_id)s, %(content_type)s, %(meta)s, %(traceback)s,
        now(), %(date_done)s)
ON CONFLICT (task_id) DO UPDATE
SET status = EXCLUDED.status, task_name = COALESCE(NULLIF(EXCLUDED.task_name, ''), {models.CeleryTaskResult._meta.db_table}.task_name),
    group_id = EXCLUDED.group_id, content_type = EXCLUDED.content_type, meta = EXCLUDED.meta,
    traceback = EXCLUDED.traceback, updated_at = now(), date_done = EXCLUDED.date_done
WHERE {models.CeleryTaskResult._meta.db_table}.status <> 'SUCCESS'
"""


def store_result(*, task_id, status, content_type, meta, task_name="", group_id="", traceback="", done=False):
    """Write a task's state and encoded meta; return False if it had succeeded already (kept)."""
    params = dict(task_id=task_id, status=status, task_name=task_name or "", group_id=group_id or "",
                  content_type=content_type, meta=meta, traceback=traceback or "",
                  date_done=timezone.now() if done else None)
    with connection.cursor() as cursor:
        cursor.execute(_STORE, params)
        return cursor.rowcount == 1


def task_meta(task_id):
    """(content type, encoded meta) of a task, or None if nothing was stored for it."""
    row = models.CeleryTaskResult.objects.filter(task_id=task_id).values_list("content_type", "meta").first()
    return None if row is None else (row[0], bytes(row[1]))


def forget(task_id):
    models.CeleryTaskResult.objects.filter(task_id=task_id).delete()


def save_group(group_id, *, content_type, meta):
    models.CeleryGroupResult.objects.update_or_create(
        group_id=group_id, defaults={"content_type": content_type, "meta": meta, "saved_at": timezone.now()})


def group_meta(group_id):
    row = models.CeleryGroupResult.objects.filter(group_id=group_id).values_list("content_type", "meta").first()
    return None if row is None else (row[0], bytes(row[1]))


def delete_group(group_id):
    models.CeleryGroupResult.objects.filter(group_id=group_id).delete()


# Chords.


def start_chord(group_id, size):
    """Record a chord about to send its header of size members (once: a chord applied again keeps
    its count)."""
    try:
        with transaction.atomic():
            models.CeleryChord.objects.create(group_id=group_id, size=size, created_at=timezone.now())
    except IntegrityError:
        pass


def set_chord_size(group_id, size):
    models.CeleryChord.objects.filter(group_id=group_id, fired_at__isnull=True).update(size=size)


def finish_part(group_id, task_id, size=None):
    """Count task_id as a finished member of the chord; return True if this made the header
    complete and the callback is this caller's to send (once per chord: the chord row is locked
    and marked fired). Call it inside the transaction that sends the callback, so both commit or
    neither does. A member counted already, or an unknown chord, returns False."""
    chord = models.CeleryChord.objects.select_for_update().filter(group_id=group_id).first()
    if chord is None or chord.fired_at is not None:
        return False
    _, created = models.CeleryChordPart.objects.get_or_create(chord=chord, task_id=task_id)
    if not created or chord.parts.count() < (size or chord.size):
        return False
    models.CeleryChord.objects.filter(id=chord.id).update(fired_at=timezone.now())
    return True


# Expiry.


def cleanup(*, older_than):
    """Delete results finished, groups saved and chords started more than older_than (a timedelta)
    ago; return how many rows of each went. An unfinished task's result stays (it may still be
    waited on)."""
    before = timezone.now() - older_than
    with transaction.atomic():
        tasks = models.CeleryTaskResult.objects.filter(date_done__lt=before).delete()[0]
        groups = models.CeleryGroupResult.objects.filter(saved_at__lt=before).delete()[0]
        chords = models.CeleryChord.objects.filter(created_at__lt=before).delete()[1].get(
            models.CeleryChord._meta.label, 0)
    return {"results": tasks, "groups": groups, "chords": chords}
