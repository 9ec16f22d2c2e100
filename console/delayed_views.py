"""The console's delayed-records page; thin over queueing.delayed (as `manage.py delayed`)."""
from django.contrib import messages
from django.db import transaction
from django.shortcuts import redirect, render

from console import access, audit, records
from queueing import delayed, exceptions, models, offsets

PAGE = 100


@access.viewer
def delayed_page(request):
    """The records waiting for their time, soonest first (the due index), at most PAGE."""
    rows = models.DelayedRecord.objects.select_related("topic").order_by("deliver_at", "id")[:PAGE]
    return render(request, "console/delayed.html", {"rows": [
        {"id": r.id, "topic": r.topic.name, "partition": r.partition, "deliver_at": r.deliver_at,
         "key": "" if r.key is None else records.shown_key(r), "size": len(r.value or b"")} for r in rows]})


@access.operator
def cancel(request, delayed_id):
    """Remove a waiting record (delayed.cancel), audited."""
    try:
        with transaction.atomic():
            due = models.DelayedRecord.objects.filter(id=delayed_id).values_list("deliver_at", flat=True).first()
            delayed.cancel(delayed_id)
            audit.record(actor=request.user.get_username(), action="cancel delayed record", target=str(delayed_id),
                         before={"deliver_at": due and due.isoformat()})
    except exceptions.QueueingError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, f"cancelled delayed record {delayed_id}")
    return redirect("console:delayed")


@access.operator
def reschedule(request, delayed_id):
    """Move a waiting record's time to an ISO 8601 moment or a delay in seconds (delayed.reschedule)."""
    at, delay = request.POST.get("at", "").strip(), request.POST.get("delay", "").strip()
    try:
        if at:
            when = {"deliver_at": offsets.parse_datetime(at)}
        else:
            try:
                when = {"delay": float(delay)}
            except ValueError:
                raise exceptions.InvalidArgument(reason="give a time (ISO 8601) or a delay in seconds") from None
        with transaction.atomic():
            before = models.DelayedRecord.objects.filter(id=delayed_id).values_list("deliver_at", flat=True).first()
            due = delayed.reschedule(delayed_id, **when)
            audit.record(actor=request.user.get_username(), action="reschedule delayed record",
                         target=str(delayed_id), before={"deliver_at": before and before.isoformat()},
                         after={"deliver_at": due.isoformat()})
    except exceptions.QueueingError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, f"delayed record {delayed_id} is now due at {due.isoformat(timespec='seconds')}")
    return redirect("console:delayed")
