"""The platform's landing page: what runs here and where to look next."""
from django.shortcuts import render

from queueing import selectors, topics


def home(request):
    context = {"user": request.user}
    if request.user.is_authenticated and request.user.is_staff:
        described = [topics.describe_topic(t.name) for t in topics.list_topics()]
        context["topics"] = [
            {"info": info, "records": sum(p.log_end_offset - p.log_start_offset for p in parts), "partitions": parts}
            for info, parts in described
        ]
        context["groups"] = selectors.group_summaries()
    return render(request, "home.html", context)
