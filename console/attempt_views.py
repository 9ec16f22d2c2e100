"""The console's retries page: every group's delivery attempts (failures that will retry, releases,
rejections, lapsed locks, dead letters), newest first, with their errors and tracebacks."""
from django.shortcuts import render

from console import access
from queueing import models

PAGE = 50


@access.viewer
def attempts_page(request):
    """The newest PAGE attempts, of one group or outcome if asked, older ones by ?before=ID (the
    primary key read backwards: never a count of the table); the totals per outcome come from the
    counts a trigger keeps (DeliveryAttemptCount)."""
    group = request.GET.get("group", "").strip()
    outcome = request.GET.get("outcome", "")
    before = request.GET.get("before", "")
    errors = []
    if outcome and outcome not in models.DeliveryAttempt.Outcome.values:
        errors.append(f"unknown outcome {outcome!r}: one of {', '.join(models.DeliveryAttempt.Outcome.values)}")
    if before and not before.isdigit():
        errors.append(f"before must be an attempt's number, not {before!r}")
    rows = models.DeliveryAttempt.objects.order_by("-id")
    if group:
        rows = rows.filter(group_name=group)
    if outcome and not errors:
        rows = rows.filter(outcome=outcome)
    if before and not errors:
        rows = rows.filter(id__lt=int(before))
    page = [] if errors else list(rows[:PAGE + 1])
    totals = models.DeliveryAttemptCount.objects.order_by("group_name", "outcome")
    if group:
        totals = totals.filter(group_name=group)
    return render(request, "console/attempts.html", {
        "attempts": page[:PAGE], "older": page[PAGE - 1].id if len(page) > PAGE else None, "group": group,
        "outcome": outcome, "outcomes": models.DeliveryAttempt.Outcome.choices, "totals": totals[:200],
        "errors": errors,
    }, status=400 if errors else 200)
