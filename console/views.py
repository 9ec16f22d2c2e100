"""The console's pages and the JSON they poll; thin over the engine's and outbox's functions."""
from django.contrib import messages
from django.db import transaction
from django.db.models import Count, F, Sum
from django.http import JsonResponse
from django.shortcuts import redirect, render
from django.utils import timezone

from console import access, audit, inputs, lag, records
from console.dead_letter_views import dead_letter_topics
from outbox import exceptions as outbox_exceptions
from outbox import half, relay
from outbox import models as outbox_models
from queueing import exceptions, offsets, remote, selectors, topics
from queueing import models as engine
from scheduler import models as task_models

PAGE = 100
KEY_WINDOW = 10_000  # newest records per partition a search by key looks through, by default


def _overview():
    """Totals read from partition end offsets and committed offsets, never from the log's rows."""
    logs = engine.Partition.objects.aggregate(partitions=Count("id"), ends=Sum("next_offset"),
                                              starts=Sum("log_start_offset"))
    groups = {}
    for row in lag.current():
        groups[row["group"]] = groups.get(row["group"], 0) + row["lag"]
    tasks = dict(task_models.TaskResult.objects.values_list("state").annotate(n=Count("id")).order_by())
    overview = {
        "topics": engine.Topic.objects.count(),
        "partitions": logs["partitions"],
        "records_retained": (logs["ends"] or 0) - (logs["starts"] or 0),
        "records_produced": logs["ends"] or 0,
        "backlog": sum(groups.values()),
        "groups": [{"name": name, "lag": value} for name, value in sorted(groups.items())],
        "dead_letters": sum(t["waiting"] or 0 for t in dead_letter_topics()),
        "outbox_pending": outbox_models.OutboxEvent.objects.filter(delivered_at=None).count(),
        "outbox_backing_off": outbox_models.OutboxEvent.objects.filter(
            delivered_at=None, next_attempt_at__gt=timezone.now()).count(),
        "half_prepared": outbox_models.HalfMessage.objects.filter(state="prepared").count(),
        "members_alive": engine.GroupMember.objects.count() + engine.ShareGroupMember.objects.count(),
        "tasks": {value: tasks.get(value, 0) for value, _ in task_models.State.choices},
    }
    rates = lag.consume_rates()
    overview["consume_rate"] = None if rates is None else round(rates["total"], 1)
    overview["consume_rate_window_s"] = None if rates is None else rates["window_s"]
    overview["consume_rates"] = [] if rates is None else [
        {"topic": topic, "rate": round(rate, 1)} for topic, rate in sorted(rates["topics"].items())]
    overview["backlog_history"], overview["backlog_trend"] = lag.backlog_history()
    produced = lag.produce_rates()
    overview["produce_rates"] = [] if produced is None else [
        {"topic": topic, "rate": round(rate, 1)} for topic, rate in produced["topics"].items()]
    overview["attention"] = _attention(overview)
    return overview


def _attention(overview):
    """What an operator should look at first, most urgent first."""
    members = dict(engine.ConsumerGroup.objects.annotate(n=Count("members")).values_list("name", "n"))
    stalled = [g for g in overview["groups"] if g["lag"] and not members.get(g["name"])]
    notes = [f"group {g['name']} has {g['lag']} records waiting and no member alive" for g in stalled]
    if overview["dead_letters"]:
        notes.append(f"{overview['dead_letters']} dead letters waiting")
    if overview["tasks"].get("failed"):
        notes.append(f"{overview['tasks']['failed']} failed tasks")
    if overview["outbox_backing_off"]:
        notes.append(f"{overview['outbox_backing_off']} outbox events backing off after a failure")
    if overview["half_prepared"]:
        notes.append(f"{overview['half_prepared']} half messages prepared, not yet resolved")
    return notes


@access.viewer
def overview(request):
    return render(request, "console/overview.html", {"overview": _overview()})


@access.viewer
def overview_json(request):
    return JsonResponse(_overview())


@access.viewer
def topics_page(request):
    rows = (engine.Partition.objects.select_related("topic").order_by("topic__name", "number")
            .annotate(records=F("next_offset") - F("log_start_offset")))
    name = request.GET.get("q", "")
    if name:
        rows = rows.filter(topic__name__icontains=name)
    consumed, produced = lag.consume_rates(), lag.produce_rates()
    names = sorted(set((consumed or {}).get("topics", {})) | set((produced or {}).get("topics", {})))
    rates = [(topic, (produced or {}).get("topics", {}).get(topic), (consumed or {}).get("topics", {}).get(topic))
             for topic in names if not name or name.lower() in topic.lower()]
    return render(request, "console/topics.html", {"partitions": rows[:PAGE * 4], "q": name, "rates": rates,
                                                    "sampled": produced or consumed})


@access.viewer
def groups(request):
    return render(request, "console/groups.html", {
        "groups": selectors.group_summaries(), "share_groups": selectors.share_group_summaries()})


@access.viewer
def group(request, name):
    try:
        partitions = selectors.group_partitions(name)
    except exceptions.GroupNotFound:
        return render(request, "console/missing.html", {"reason": f"There is no consumer group {name!r}."}, status=404)
    return render(request, "console/group.html", {
        "name": name, "partitions": partitions, "members": selectors.group_members(name),
        "total_lag": sum(p.lag or 0 for p in partitions)})


@access.viewer
def group_json(request, name):
    try:
        partitions = selectors.group_partitions(name)
    except exceptions.GroupNotFound:
        return JsonResponse({"error": f"no consumer group {name}"}, status=404)
    return JsonResponse({
        "group": name,
        "lag": sum(p.lag or 0 for p in partitions),
        "partitions": [{"topic": p.topic, "partition": p.partition, "current_offset": p.current_offset,
                        "log_end_offset": p.log_end_offset, "lag": p.lag, "host": p.host} for p in partitions],
        "history": [{"t": s["sampled_at"].isoformat(), "topic": s["topic_name"], "lag": s["lag"]}
                    for s in lag.history(name)],
    })


@access.viewer
def half_messages(request):
    prepared = (outbox_models.HalfMessage.objects.filter(state="prepared").order_by("created_at")
                .prefetch_related("checks")[:PAGE])
    resolved = outbox_models.HalfMessage.objects.exclude(state="prepared").order_by("-resolved_at")[:20]
    return render(request, "console/half_messages.html", {"prepared": prepared, "resolved": resolved})


@access.operator
def resolve_half_message(request, message_id, decision):
    """Commit or roll back a prepared half message by hand, through outbox.half, audited."""
    actor = request.user.get_username()
    action = {"commit": half.commit, "rollback": half.rollback}[decision]
    try:
        with transaction.atomic():
            message = action(message_id, reason=f"{decision} by {actor} from the console")
            audit.record(actor=actor, action=f"half message {decision}", target=str(message_id),
                         before={"state": "prepared"}, after={"state": message.state, "offset": message.offset})
    except (outbox_exceptions.HalfMessageNotFound, outbox_exceptions.HalfMessageResolved) as error:
        messages.error(request, str(error))
    else:
        messages.success(request, f"half message {message_id}: {message.state}")
    return redirect("console:half_messages")


@access.viewer
def audit_log(request):
    return render(request, "console/audit.html", {"entries": audit.recent()})


def _key_search(name, data):
    """The records with the key data asks for, among the newest records of one or every partition."""
    chosen = data.get("key_partition", "")
    partitions = None if chosen == "" else [inputs.strict_whole(chosen, "partition")]
    window = inputs.strict_whole(data.get("window") or KEY_WINDOW, "window")
    return remote.find_by_key(name, records.key_candidates(data["key"]), partitions=partitions, window=window,
                              max_records=records.PAGE_RECORDS)


@access.viewer
def messages_page(request, name):
    """The message browser: a partition read from an offset or from a time (?at=, the first offset
    stamped at or after it), PAGE_RECORDS at a time; or the records with a key (?key=) among the
    newest records of a partition or of each partition."""
    data = request.GET
    context = {"key": data.get("key", ""), "at": data.get("at", ""), "window": data.get("window") or KEY_WINDOW,
               "key_partition": data.get("key_partition", "")}
    try:
        info = topics.get_topic(name)
        context.update(topic=info, partitions=range(info.partition_count))
        partition = inputs.strict_whole(data.get("partition") or 0, "partition")
        offset = inputs.whole(data.get("offset"))
        context["partition"] = partition
        if context["at"]:
            offset = remote.offset_for_time(name, partition, offsets.parse_datetime(context["at"].strip()))
        if context["key"]:
            context["windows"], context["found"] = _key_search(name, data)
            context["found"] = [records.view(r) for r in context["found"]]
        context["page"] = records.page(name, partition, offset, records.PAGE_RECORDS)
    except (exceptions.TopicNotFound, exceptions.PartitionNotFound) as error:
        return render(request, "console/missing.html", {"reason": str(error)}, status=404)
    except exceptions.InvalidArgument as error:
        context["error"] = str(error)
        return render(request, "console/messages.html", context, status=400)
    return render(request, "console/messages.html", context)


SCENARIOS = {  # scenario: how its value is read (None: it takes none), as reset_offsets reads it
    "to_earliest": None, "to_latest": None, "to_current": None, "to_offset": int, "shift_by": int,
    "to_datetime": offsets.parse_datetime, "by_duration": offsets.parse_duration,
}


def _reset_plan(name, data):
    """The offset reset data asks for, planned by queueing.offsets; returns (plan, scenario label)."""
    scenario = data.get("scenario", "")
    if scenario not in SCENARIOS:
        raise exceptions.InvalidArgument(reason=f"choose a scenario: {', '.join(SCENARIOS)}")
    value, parse = None, SCENARIOS[scenario]
    if parse is not None:
        try:
            value = parse(data.get("value", "").strip())
        except ValueError:
            raise exceptions.InvalidArgument(reason=f"{scenario} needs a whole number") from None
        if scenario == "to_offset" and value < 0:
            raise exceptions.InvalidArgument(reason="to_offset must be 0 or more")
    topic = data.get("topic", "").strip()
    plan = offsets.plan_reset(name, topic_specs=[topic] if topic else (), all_topics=not topic,
                              scenario=scenario, value=value)
    return plan, scenario if parse is None else f"{scenario} {value}"


@access.viewer
def reset_plan(request, name):
    """The dry run: the plan of an offset reset, changing nothing, with the form that applies it."""
    context = {"name": name, "scenarios": list(SCENARIOS), "data": request.GET}
    if request.GET.get("scenario"):
        try:
            context["plan"], _ = _reset_plan(name, request.GET)
        except exceptions.QueueingError as error:
            context["error"] = str(error)
    return render(request, "console/reset.html", context)


@access.operator
def reset_execute(request, name):
    """Apply an offset reset as reset_offsets --execute does (fenced, in the offset-reset trail)."""
    try:
        plan, scenario = _reset_plan(name, request.POST)
        fenced = offsets.execute_reset(plan, actor=request.user.get_username(), scenario=scenario)
    except exceptions.QueueingError as error:
        messages.error(request, str(error))
        return redirect("console:group", name=name)
    messages.success(request, f"reset {len(plan)} partition(s) of {name}; generation {fenced} fenced")
    return redirect("console:group", name=name)


@access.operator
def create_topic(request):
    """Create a topic through queueing.topics (the topics command's create), audited."""
    name = request.POST.get("name", "").strip()
    try:
        with transaction.atomic():
            info = topics.create_topic(name, partitions=inputs.integer(request.POST.get("partitions", "1"), "partitions"))
            audit.record(actor=request.user.get_username(), action="create topic", target=name,
                         after={"partitions": info.partition_count})
    except exceptions.QueueingError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, f"created topic {name} with {info.partition_count} partition(s)")
    return redirect("console:topics")


@access.operator
def add_partitions(request, name):
    """Grow a topic's partition count through queueing.topics.alter_topic, audited."""
    try:
        with transaction.atomic():
            before = topics.get_topic(name).partition_count
            info = topics.alter_topic(name, partitions=inputs.integer(request.POST.get("partitions"), "partitions"))
            audit.record(actor=request.user.get_username(), action="add partitions", target=name,
                         before={"partitions": before}, after={"partitions": info.partition_count})
    except exceptions.QueueingError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, f"{name} now has {info.partition_count} partitions")
    return redirect("console:topics")


@access.operator
def delete_topic(request, name):
    """Delete a topic and its records, only when its name was typed again to confirm; audited."""
    if request.POST.get("confirm_name") != name:
        messages.error(request, f"type the topic's name, {name}, to delete it")
        return redirect("console:topics")
    try:
        with transaction.atomic():
            before = topics.get_topic(name)
            topics.delete_topic(name)
            audit.record(actor=request.user.get_username(), action="delete topic", target=name,
                         before={"partitions": before.partition_count})
    except exceptions.QueueingError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, f"deleted topic {name}")
    return redirect("console:topics")


@access.viewer
def outbox_page(request):
    """The outbox's backlog (outbox.relay.backlog) and the events backing off, oldest first."""
    waiting = (outbox_models.OutboxEvent.objects.filter(delivered_at=None).exclude(last_error="")
               .order_by("seq")[:PAGE])
    return render(request, "console/outbox.html", {"backlog": relay.backlog(), "waiting": waiting})


@access.operator
def outbox_retry(request):
    """Retry now the selected events that back off, or all of them; audited."""
    seqs = None if request.POST.get("scope") == "all" else [
        int(s) for s in request.POST.getlist("event") if s.isdigit()]
    with transaction.atomic():
        count = relay.retry_now(seqs)
        audit.record(actor=request.user.get_username(), action="outbox retry now", target="outbox",
                     before={"events": seqs if seqs is not None else "all"}, after={"made_due": count})
    messages.success(request, f"{count} outbox event(s) will be retried now")
    return redirect("console:outbox")


@access.viewer
def share_group(request, name):
    """A share group: per partition its window, records held (in flight) and waiting, the highest
    delivery count and dead letters (queueing.selectors.share_group_partitions); its members."""
    try:
        partitions = selectors.share_group_partitions(name)
    except exceptions.GroupNotFound:
        return render(request, "console/missing.html", {"reason": f"There is no share group {name!r}."}, status=404)
    members = engine.ShareGroupMember.objects.filter(group__name=name).order_by("id")
    return render(request, "console/share_group.html", {"name": name, "partitions": partitions, "members": members})
