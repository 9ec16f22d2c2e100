"""/metrics: the platform's state in Prometheus' text format, read in a fixed number of cheap queries.

A scrape never counts the log. Offsets are dense and start at 0, so a partition's end offset is the
number of records ever appended to it, and a committed offset the number a group has moved past;
lag is their difference. Attempts are read from counters a trigger keeps (DeliveryAttemptCount).
Backlogs (undelivered outbox events, prepared half messages, delayed records, unfinished tasks) are
counted through their partial or leading indexes, so they cost what the backlog holds, not what the
history holds. Finished tasks are summed from the counts each finish adds to, per 10 s (TaskFinishCount).
"""
import datetime

from django.conf import settings
from django.db.models import Count, Max, Min, Q, Sum
from django.utils import timezone
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.utils import floatToGoString

from outbox import models as outbox_models
from queueing import models
from scheduler import models as task_models

RECENT_S = 300
# The number of queries one scrape runs, whatever the number of topics, groups or records.
QUERIES = 12


def render():
    """Return (body, content type) of one scrape."""
    return exposition(_Collector().collect()).encode(), "text/plain; version=0.0.4; charset=utf-8"


# Prometheus' text format escapes these in label values (and the first two in HELP).
_LABEL_ESCAPES = str.maketrans({"\\": "\\\\", "\n": "\\n", '"': '\\"'})
_HELP_ESCAPES = str.maketrans({"\\": "\\\\", "\n": "\\n"})


def exposition(families):
    """The text format (0.0.4) of prometheus_client metric families: what its generate_latest
    writes for them, without its per-sample checks of label names (ours are fixed, and valid) that
    made most of a scrape's time at 16,000 samples (500 topics of 8 partitions, 200 groups)."""
    lines = []
    for family in families:
        name = family.name + "_total" if family.type == "counter" else family.name  # as generate_latest names it
        lines.append(f"# HELP {name} {family.documentation.translate(_HELP_ESCAPES)}")
        lines.append(f"# TYPE {name} {family.type}")
        for sample in family.samples:
            value = sample.value
            shown = f"{value}.0" if type(value) is int else floatToGoString(value)
            if sample.labels:
                labels = ",".join(f'{name}="{str(text).translate(_LABEL_ESCAPES)}"'
                                  for name, text in sample.labels.items())
                lines.append(f"{sample.name}{{{labels}}} {shown}")
            else:
                lines.append(f"{sample.name} {shown}")
    lines.append("")
    return "\n".join(lines)


class _Collector:
    def collect(self):
        now = timezone.now()
        ends = yield from _log()
        yield from _groups(ends)
        yield from _share_groups(ends)
        yield from _attempts()
        yield from _members(now)
        yield from _backlogs(now)
        yield from _tasks(now)


def _log():
    """End offsets per partition, records produced and still in the log per topic; returns the ends."""
    end = GaugeMetricFamily("sluice_log_end_offset", "Offset the partition's next record gets",
                            labels=["topic", "partition"])
    produced = CounterMetricFamily("sluice_records_produced", "Records appended to the topic, ever",
                                   labels=["topic"])
    kept = GaugeMetricFamily("sluice_log_records", "Records still in the topic's log (retention and "
                             "compaction remove the others)", labels=["topic"])
    ends, per_topic = {}, {}
    rows = models.Partition.objects.values_list("topic__name", "number", "log_start_offset", "next_offset")
    for topic, number, first, after in rows.order_by("topic__name", "number"):
        end.add_metric([topic, str(number)], after)
        ends[topic, number] = after
        total, held = per_topic.get(topic, (0, 0))
        per_topic[topic] = (total + after, held + after - first)
    for topic, (total, held) in per_topic.items():
        produced.add_metric([topic], total)
        kept.add_metric([topic], held)
    yield from (end, produced, kept)
    return ends


def _groups(ends):
    # Lag per partition is end minus committed, which Prometheus derives; summed per topic here,
    # since a per-partition copy would add a series per committed offset to every scrape.
    committed = GaugeMetricFamily("sluice_committed_offset", "Consumer group's committed offset (next to read)",
                                  labels=["group", "topic", "partition"])
    lag = GaugeMetricFamily("sluice_consumer_lag", "Log end offsets minus committed offsets, over the group's "
                            "partitions of the topic", labels=["group", "topic"])
    consumed = CounterMetricFamily(
        "sluice_records_consumed", "Records the group has committed past, over its partitions (an offset "
        "reset moves it)", labels=["group", "topic"])
    per_topic = {}
    rows = models.CommittedOffset.objects.values_list("group__name", "topic__name", "partition", "offset")
    for group, topic, partition, offset in rows.order_by("group__name", "topic__name", "partition"):
        committed.add_metric([group, topic, str(partition)], offset)
        behind = max(0, ends.get((topic, partition), offset) - offset)
        done, late = per_topic.get((group, topic), (0, 0))
        per_topic[group, topic] = (done + offset, late + behind)
    for (group, topic), (done, late) in per_topic.items():
        consumed.add_metric([group, topic], done)
        lag.add_metric([group, topic], late)
    yield from (committed, lag, consumed)


def _share_groups(ends):
    start = GaugeMetricFamily("sluice_share_start_offset", "Share group's first unfinished offset, as last "
                              "stored (it moves at the next acquisition)", labels=["group", "topic", "partition"])
    backlog = GaugeMetricFamily("sluice_share_backlog", "Log end offsets minus the share group's start offsets, "
                                "over its partitions of the topic", labels=["group", "topic"])
    per_topic = {}
    rows = models.SharePartition.objects.values_list("group__name", "topic__name", "partition", "start_offset")
    for group, topic, partition, offset in rows.order_by("group__name", "topic__name", "partition"):
        start.add_metric([group, topic, str(partition)], offset)
        behind = max(0, ends.get((topic, partition), offset) - offset)
        per_topic[group, topic] = per_topic.get((group, topic), 0) + behind
    for (group, topic), behind in per_topic.items():
        backlog.add_metric([group, topic], behind)
    yield from (start, backlog)


def _attempts():
    attempts = CounterMetricFamily("sluice_delivery_attempts", "Unsuccessful deliveries by outcome, ever",
                                   labels=["group", "outcome"])
    dead = CounterMetricFamily("sluice_dead_letters", "Records the group sent to its dead-letter topic, ever",
                               labels=["group"])
    rows = models.DeliveryAttemptCount.objects.values_list("group_name", "outcome", "count")
    for group, outcome, count in rows.order_by("group_name", "outcome"):
        attempts.add_metric([group, outcome], count)
        if outcome == models.DeliveryAttempt.Outcome.DEAD_LETTERED:
            dead.add_metric([group], count)
    yield from (attempts, dead)


def _members(now):
    alive = GaugeMetricFamily("sluice_workers_alive", "Members whose heartbeat is within their session timeout",
                              labels=["group", "kind"])
    counts = {}
    # Outer joins: a group without members reports 0 rather than disappearing.
    for group, beat, timeout_ms in models.ConsumerGroup.objects.values_list(
            "name", "members__last_heartbeat", "members__session_timeout_ms"):
        live = beat is not None and beat + datetime.timedelta(milliseconds=timeout_ms) >= now
        counts[group, "consumer"] = counts.get((group, "consumer"), 0) + live
    since = now - datetime.timedelta(milliseconds=settings.SLUICE["SESSION_TIMEOUT_MS"])
    for group, live in models.ShareGroup.objects.annotate(
            n=Count("members", filter=Q(members__last_heartbeat__gte=since))).values_list("name", "n"):
        counts[group, "share"] = live
    for (group, kind), live in sorted(counts.items()):
        alive.add_metric([group, kind], live)
    yield alive


def _backlogs(now):
    """Outbox events, half messages and delayed records waiting, and the oldest of each."""
    def age(oldest):
        return (now - oldest).total_seconds() if oldest else 0

    pending = outbox_models.OutboxEvent.objects.filter(delivered_at__isnull=True)
    first = pending.order_by("seq").values_list("created_at", flat=True).first()
    yield GaugeMetricFamily("sluice_outbox_backlog", "Outbox events not delivered yet", value=pending.count())
    yield GaugeMetricFamily("sluice_outbox_oldest_age_seconds", "Age of the oldest undelivered outbox event",
                            value=age(first))
    half = outbox_models.HalfMessage.objects.filter(state=outbox_models.HalfMessage.State.PREPARED).aggregate(
        n=Count("id"), oldest=Min("created_at"))
    yield GaugeMetricFamily("sluice_half_messages_prepared", "Half messages neither committed nor rolled back",
                            value=half["n"])
    yield GaugeMetricFamily("sluice_half_messages_oldest_age_seconds", "Age of the oldest prepared half message",
                            value=age(half["oldest"]))
    delayed = models.DelayedRecord.objects.aggregate(n=Count("id"), due=Min("deliver_at"))
    yield GaugeMetricFamily("sluice_delayed_records", "Delayed records waiting to enter the log", value=delayed["n"])
    yield GaugeMetricFamily("sluice_delayed_overdue_seconds", "How far past its time the earliest delayed record "
                            "is (0: none is due)", value=max(0.0, age(delayed["due"])))


def _tasks(now):
    unfinished = GaugeMetricFamily("sluice_tasks_unfinished", "Tasks queued, scheduled, retrying or running",
                                   labels=["queue", "state"])
    for queue, state, n in task_models.TaskResult.objects.filter(state__in=task_models.ACTIVE).values_list(
            "queue", "state").annotate(n=Count("id")).order_by("queue", "state"):
        unfinished.add_metric([queue, state], n)
    yield unfinished
    finished = GaugeMetricFamily("sluice_tasks_finished_recent", f"Tasks finished in the last {RECENT_S} s, by "
                                 "outcome", labels=["queue", "state"])
    total = GaugeMetricFamily("sluice_task_run_seconds_recent_sum", f"Run time of the tasks finished in the last "
                              f"{RECENT_S} s (from start to finish)", labels=["queue", "state"])
    longest = GaugeMetricFamily("sluice_task_run_seconds_recent_max", f"Longest run of the tasks finished in the "
                                f"last {RECENT_S} s", labels=["queue", "state"])
    # The counts of the periods that began in the window (TaskFinishCount: 10 s periods, so the
    # window is the last RECENT_S seconds, give or take one period).
    rows = (task_models.TaskFinishCount.objects.filter(period__gte=now - datetime.timedelta(seconds=RECENT_S))
            .values_list("queue", "state").annotate(n=Sum("count"), total=Sum("run_seconds"), most=Max("run_max"))
            .order_by("queue", "state"))
    for queue, state, n, spent, most in rows:
        finished.add_metric([queue, state], n)
        total.add_metric([queue, state], spent or 0)
        longest.add_metric([queue, state], most or 0)
    yield from (finished, total, longest)
