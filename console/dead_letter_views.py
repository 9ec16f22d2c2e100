"""The console's dead letters: the topics that hold them, a topic's records with each one's delivery
attempts, redrive to the failing group, and purge."""
from django.contrib import messages
from django.db import transaction
from django.db.models import Count, F, Q, Sum
from django.shortcuts import redirect, render

from console import access, audit, inputs, records
from queueing import exceptions, replay, retention, retries, topics
from queueing import models as engine


def dead_letter_topics():
    """Topics that hold dead letters: every policy's dead-letter topic and the default GROUP.DLQ ones."""
    named = retries.dead_letter_topic_names()
    return (engine.Partition.objects.filter(Q(topic__name__in=named) | Q(topic__name__endswith=".DLQ"))
            .values("topic__name").annotate(waiting=Sum(F("next_offset") - F("log_start_offset")),
                                             partitions=Count("id")).order_by("topic__name"))


@access.viewer
def dead_letters(request):
    return render(request, "console/dead_letters.html", {"topics": dead_letter_topics()})


@access.viewer
def dead_letter_topic(request, name):
    """A dead-letter topic's records with their origin; one opened with every delivery attempt."""
    partition, offset = inputs.whole(request.GET.get("partition"), 0), inputs.whole(request.GET.get("offset"))
    try:
        info = topics.get_topic(name)
        page = records.page(name, partition, offset, records.PAGE_RECORDS)
    except (exceptions.TopicNotFound, exceptions.PartitionNotFound) as error:
        return render(request, "console/missing.html", {"reason": str(error)}, status=404)
    opened, attempts = None, []
    chosen = inputs.whole(request.GET.get("open"))
    if chosen is not None:
        opened = next((r for r in page["records"] if r["offset"] == chosen), None)
        if opened and opened["origin"]:
            origin = opened["origin"]
            attempts = engine.DeliveryAttempt.objects.filter(
                group_name=origin["group"], topic_name=origin["topic"], partition=inputs.whole(origin["partition"], -1),
                offset=inputs.whole(origin["offset"], -1)).order_by("attempt", "id")[:50]
    return render(request, "console/dead_letter_topic.html", {
        "topic": info, "partition": partition, "page": page, "partitions": range(info.partition_count),
        "opened": opened, "attempts": attempts})


@access.operator
def redrive(request, name):
    """Send the selected dead letters (or all) back to the group that failed them: the replay the
    `replay --to-original` command runs, audited."""
    actor = request.user.get_username()
    try:
        selected = None if request.POST.get("scope") == "all" else [
            replay.parse_offset_spec(spec) for spec in request.POST.getlist("record")]
        if selected == []:
            raise exceptions.InvalidArgument(reason="select at least one dead letter, or redrive all")
        plan = replay.plan_replay(name, to_original=True, offsets=selected)
        # Not one transaction: a redrive of every dead letter runs in batches, as the command's does.
        result = replay.execute_replay(plan)
        audit.record(actor=actor, action="redrive dead letters", target=name,
                     before={"selected": plan.count, "offsets": [f"{p}:{o}" for p, o in selected or ()] or "all"},
                     after={"replayed": result.replayed, "skipped": result.skipped})
    except exceptions.QueueingError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, f"redrove {result.replayed} dead letter(s) from {name}")
    return redirect("console:dead_letter_topic", name=name)


@access.operator
def purge_dead_letters(request, name):
    """Delete a dead-letter topic's records, all of them or those of one partition below an offset
    (queueing.retention.delete_records, the topics delete-records command), only when the topic's
    name was typed again to confirm; audited. Dead-letter topics only."""
    if request.POST.get("confirm_name") != name:
        messages.error(request, f"type the topic's name, {name}, to purge it")
        return redirect("console:dead_letter_topic", name=name)
    try:
        if request.POST.get("scope") == "before":
            partition = inputs.integer(request.POST.get("partition"), "partition")
            before = {partition: inputs.integer(request.POST.get("before"), "the offset to purge below")}
            partitions = [partition]
        else:
            before = partitions = None
        with transaction.atomic():
            done = retention.delete_records(name, before=before, partitions=partitions)
            audit.record(actor=request.user.get_username(), action="purge dead letters", target=name,
                         before={"log_starts": {d.partition: d.old_start for d in done}},
                         after={"log_starts": {d.partition: d.new_start for d in done},
                                "deleted": sum(d.deleted for d in done)})
    except exceptions.QueueingError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, f"purged {sum(d.new_start - d.old_start for d in done)} dead letter(s) from {name}")
    return redirect("console:dead_letter_topic", name=name)
