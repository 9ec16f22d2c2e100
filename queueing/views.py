"""The platform's landing page: what runs here and where to look next."""
from django.db.models import F, Sum
from django.shortcuts import render

from queueing import models, selectors

HOME_ROWS = 100  # topics and groups listed here; the console lists them all


def home(request):
    context = {"user": request.user}
    if request.user.is_authenticated and request.user.is_staff:
        # One query for the topics (records from the partitions' end and start offsets, never the
        # log's rows) and one for the groups, each limited: the console pages through the rest.
        context["topics"] = list(
            models.Topic.objects.order_by("name")
            .annotate(records=Sum(F("partitions__next_offset") - F("partitions__log_start_offset")))
            .values("name", "partition_count", "records")[:HOME_ROWS])
        context["topics_total"] = models.Topic.objects.count()
        context["groups"] = selectors.group_summaries(limit=HOME_ROWS)
        context["groups_total"] = models.ConsumerGroup.objects.count()
    return render(request, "home.html", context)
