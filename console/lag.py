"""Lag history: sample every group's lag per topic from offsets (never counting log rows), keep it for
SLUICE_CONSOLE_LAG_RETENTION_S, and read it back for the charts and the consume rates."""
import datetime
import logging

from django.conf import settings
from django.db import transaction
from django.db.models import F, Max, Sum
from django.utils import timezone

from console import models
from queueing import loops
from queueing import models as engine

logger = logging.getLogger("sluice.console")


def sample(now=None):
    """Store one sample per (group, topic) with committed offsets, and one per topic of its log end
    offsets; drop samples past retention.

    Lag is the sum over partitions of log end offset minus committed offset, read from the
    partitions' and offsets' rows only. Returns the number of lag samples stored.
    """
    now = now or timezone.now()
    rows = _per_group_and_topic()
    samples = [
        models.LagSample(group_name=r["group_name"], topic_name=r["topic_name"], lag=max(0, r["lag"] or 0),
                         end_offset_total=r["ends"] or 0, sampled_at=now)
        for r in rows
    ]
    ends = [models.TopicSample(topic_name=r["topic__name"], end_offset_total=r["ends"] or 0, sampled_at=now)
            for r in engine.Partition.objects.values("topic__name").annotate(ends=Sum("next_offset"))]
    cutoff = now - datetime.timedelta(seconds=settings.SLUICE_CONSOLE["LAG_RETENTION_S"])
    with transaction.atomic():
        models.LagSample.objects.bulk_create(samples)
        models.TopicSample.objects.bulk_create(ends)
        models.LagSample.objects.filter(sampled_at__lt=cutoff).delete()
        models.TopicSample.objects.filter(sampled_at__lt=cutoff).delete()
    return len(samples)


def history(group, *, since=None, limit=2000):
    """A group's samples, oldest first, as (time, topic, lag) points, at most limit of the newest."""
    rows = models.LagSample.objects.filter(group_name=group)
    if since:
        rows = rows.filter(sampled_at__gte=since)
    points = list(rows.order_by("-sampled_at").values("sampled_at", "topic_name", "lag")[:limit])
    points.reverse()
    return points


def consume_rates():
    """Records consumed per second by groups, from the two newest rounds of samples (a sample's
    committed total is its end offset total minus its lag): {"total", "topics": {topic: rate},
    "groups": {(group, topic): rate}, "window_s", "sampled_at"}, or None before two rounds exist.

    Two index probes for the round times and the rows of those two rounds; never the log. A group
    that commits on a new partition, or whose offsets are reset, shows a jump for one window; a
    negative change (a reset backwards) counts as 0.
    """
    changes = _changes_per_second(models.LagSample, ("group_name", "topic_name"), ("end_offset_total", "lag"),
                                  lambda row: row["end_offset_total"] - row["lag"])
    if changes is None:
        return None
    by_group, seconds, newest = changes
    by_topic = {}
    for (_, topic), rate in by_group.items():
        by_topic[topic] = by_topic.get(topic, 0) + rate
    return {"total": sum(by_group.values()), "topics": by_topic, "groups": by_group,
            "window_s": seconds, "sampled_at": newest}


def produce_rates():
    """Records appended per second to each topic, from the two newest rounds of topic samples (the
    change of its summed log end offsets): {"total", "topics": {topic: rate}, "window_s",
    "sampled_at"}, or None before two rounds exist. Never the log."""
    changes = _changes_per_second(models.TopicSample, ("topic_name",), ("end_offset_total",),
                                  lambda row: row["end_offset_total"])
    if changes is None:
        return None
    by_topic, seconds, newest = changes
    by_topic = {topic: rate for (topic,), rate in by_topic.items()}
    return {"total": sum(by_topic.values()), "topics": by_topic, "window_s": seconds, "sampled_at": newest}


def backlog_history(rounds=40):
    """The total lag of every group at each of the sampler's last rounds (at most rounds of them,
    oldest first) as [{"t", "lag"}], and a one-line trend over them ("rising 12.0 records/min over
    the last 9.8 min", "falling ...", "flat ...", or why there is none). One query over the rows of
    those rounds only (the index on sampled_at)."""
    since = timezone.now() - datetime.timedelta(seconds=rounds * settings.SLUICE_CONSOLE["LAG_SAMPLE_S"])
    points = [{"t": row["sampled_at"].isoformat(), "lag": row["total"]}
              for row in models.LagSample.objects.filter(sampled_at__gte=since).values("sampled_at")
              .annotate(total=Sum("lag")).order_by("sampled_at")][-rounds:]
    if len(points) < 2:
        return points, "needs two samples of the lag sampler"
    first, last = points[0], points[-1]
    minutes = (datetime.datetime.fromisoformat(last["t"]) - datetime.datetime.fromisoformat(first["t"])).total_seconds() / 60
    change = (last["lag"] - first["lag"]) / minutes
    way = "rising" if change > 0 else ("falling" if change < 0 else "flat")
    return points, f"{way} {abs(change):.1f} records/min over the last {minutes:.1f} min"


def _changes_per_second(model, keys, fields, value):
    """How fast value(row) (of the fields read) grew per key (a tuple of the keys' fields) between a sample table's two
    newest rounds: ({key: per second, never below 0}, seconds between them, the newest round's
    time), or None before two rounds exist. Only those rounds' rows are read."""
    rounds = _last_two_rounds(model)
    if rounds is None:
        return None
    previous, newest = rounds
    seconds = (newest - previous).total_seconds()
    pairs = {}
    for row in model.objects.filter(sampled_at__in=rounds).values(*keys, "sampled_at", *fields):
        pairs.setdefault(tuple(row[k] for k in keys), {})[row["sampled_at"]] = value(row)
    return ({key: max(0, pair[newest] - pair[previous]) / seconds for key, pair in sorted(pairs.items())
             if len(pair) == 2}, seconds, newest)


def _last_two_rounds(model):
    """(previous, newest) sampled_at of a sample table's two newest rounds (two index probes), or None."""
    newest = model.objects.aggregate(t=Max("sampled_at"))["t"]
    if newest is None:
        return None
    previous = model.objects.filter(sampled_at__lt=newest).aggregate(t=Max("sampled_at"))["t"]
    return None if previous is None else (previous, newest)


class LagSampler(loops.Loop):
    """Samples lag every SLUICE_CONSOLE_LAG_SAMPLE_S seconds; `manage.py serve` runs it."""

    name = "lag sampler"
    role = "lag-sampler"

    def __init__(self):
        super().__init__()
        self.interval = settings.SLUICE_CONSOLE["LAG_SAMPLE_S"]

    def run_once(self):
        stored = sample()
        logger.debug("lag sampler stored %s samples", stored, extra={"samples": stored})
        return False


def _per_group_and_topic():
    """Per (group, topic): lag (sum of log end offset minus committed offset) and the sum of the
    end offsets, in one query joining committed offsets to their partitions' rows (a hash join on
    topic and partition number, not a subquery per offset), never reading the log."""
    return (
        engine.Partition.objects.filter(topic__committedoffset__partition=F("number"))
        .values(group_name=F("topic__committedoffset__group__name"), topic_name=F("topic__name"))
        .annotate(lag=Sum(F("next_offset") - F("topic__committedoffset__offset")), ends=Sum("next_offset"))
    )


def current():
    """Every group's lag per topic now, as dicts of group, topic and lag (offsets only)."""
    return [{"group": r["group_name"], "topic": r["topic_name"], "lag": max(0, r["lag"] or 0)}
            for r in _per_group_and_topic()]
