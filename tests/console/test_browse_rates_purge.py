"""The message browser by time and by key, consume rates from lag samples, and the dead-letter purge,
through Django's test client."""
import datetime

from django.db import connection
from django.utils import timezone

from console import lag, models
from queueing import producer, topics
from queueing import models as engine
from tests.console.conftest import consume




def stamp(topic, offset, moment):
    """Move one record in time (timestamps are the database's own, not the test's)."""
    with connection.cursor() as cursor:
        cursor.execute('UPDATE queueing_record SET "timestamp" = %s WHERE topic_id = %s AND "offset" = %s',
                       [moment, topics.get_topic(topic).id, offset])


def stored(topic):
    return sorted(engine.Record.objects.filter(topic_id=topics.get_topic(topic).id).values_list("offset", flat=True))


# The message browser by time ---------------------------------------------------------------------

def test_the_browser_jumps_to_the_first_offset_at_or_after_a_time(staff_client):
    topics.create_topic("events")
    producer.send_batch("events", [f"e{i}".encode() for i in range(4)], partition=0)
    for offset, day in enumerate([1, 2, 3, 4]):
        stamp("events", offset, datetime.datetime(2026, 11, day, tzinfo=datetime.UTC))
    page = staff_client.get("/console/topics/events/messages/", {"partition": 0, "at": "2026-11-02T12:00:00Z"})
    assert page.status_code == 200
    assert page.context["page"]["start"] == 2
    assert [r["offset"] for r in page.context["page"]["records"]] == [2, 3]
    later = staff_client.get("/console/topics/events/messages/", {"partition": 0, "at": "2027-01-01T00:00:00+01:00"})
    assert later.context["page"]["start"] == 4 and later.context["page"]["records"] == []  # the log end


def test_a_bad_time_or_partition_gets_a_clear_error(staff_client):
    topics.create_topic("events", partitions=2)
    bad = staff_client.get("/console/topics/events/messages/", {"at": "yesterday"})
    assert bad.status_code == 400 and "is not an ISO-8601 date and time" in bad.content.decode()
    zoneless = staff_client.get("/console/topics/events/messages/", {"at": "2026-11-02T12:00:00"})
    assert zoneless.status_code == 400 and "has no time zone" in zoneless.content.decode()
    unknown = staff_client.get("/console/topics/events/messages/", {"partition": 5, "at": "2026-11-02T12:00:00Z"})
    assert unknown.status_code == 404 and "<p>Topic &#x27;events&#x27; has no partition 5.</p>" in unknown.content.decode()
    words = staff_client.get("/console/topics/events/messages/", {"partition": "two"})
    assert words.status_code == 400 and "partition must be a whole number" in words.content.decode()


# The message browser by key ----------------------------------------------------------------------

def test_records_are_found_by_key_among_the_newest_records(staff_client):
    topics.create_topic("orders", partitions=2)
    producer.send_batch("orders", [b"a1", b"b1", b"a2"], key="cust-a", partition=0)
    producer.send("orders", b"b2", key="cust-b", partition=0)
    producer.send("orders", b"a3", key="cust-a", partition=1)
    page = staff_client.get("/console/topics/orders/messages/", {"key": "cust-a"})
    assert page.status_code == 200
    assert sorted((r["partition"], r["offset"]) for r in page.context["found"]) == [(0, 0), (0, 1), (0, 2), (1, 0)]
    assert page.context["windows"] == [(0, 0, 4), (1, 0, 1)]
    assert "Searched only the newest records" in page.content.decode()
    # A window of 2 on partition 0 looks at offsets 2 and 3 only.
    narrow = staff_client.get("/console/topics/orders/messages/", {"key": "cust-a", "key_partition": 0, "window": 2})
    assert [(r["partition"], r["offset"]) for r in narrow.context["found"]] == [(0, 2)]
    assert narrow.context["windows"] == [(0, 2, 4)]
    none = staff_client.get("/console/topics/orders/messages/", {"key": "nobody"})
    assert none.context["found"] == [] and "No record with this key" in none.content.decode()


def test_a_key_that_is_not_text_is_found_by_its_hex(staff_client):
    topics.create_topic("raw")
    producer.send("raw", b"v", key=b"\xff\x01", partition=0)
    page = staff_client.get("/console/topics/raw/messages/", {"key": "0xff01"})
    assert [r["key"] for r in page.context["found"]] == ["0xff01"]


def test_a_bad_key_search_gets_a_clear_error(staff_client):
    topics.create_topic("orders")
    too_wide = staff_client.get("/console/topics/orders/messages/", {"key": "k", "window": 10_000_000})
    assert too_wide.status_code == 400 and "the window is 1 to 100000 records" in too_wide.content.decode()
    unknown = staff_client.get("/console/topics/orders/messages/", {"key": "k", "key_partition": 3})
    assert unknown.status_code == 404


# Consume rates -----------------------------------------------------------------------------------

def test_consume_rates_come_from_the_last_two_lag_samples(staff_client):
    topics.create_topic("orders")
    producer.send_batch("orders", [b"x"] * 10, partition=0)
    assert staff_client.get("/console/overview.json").json()["consume_rate"] is None
    assert "No rates yet" in staff_client.get("/console/topics/").content.decode()
    consume("billing", "orders", 2)
    now = timezone.now()
    lag.sample(now=now - datetime.timedelta(seconds=10))
    consume("billing", "orders", 5)  # committed 2 -> 7 in 10 seconds
    lag.sample(now=now)
    rates = lag.consume_rates()
    assert rates["groups"] == {("billing", "orders"): 0.5} and rates["window_s"] == 10
    data = staff_client.get("/console/overview.json").json()
    assert data["consume_rate"] == 0.5 and data["consume_rates"] == [{"topic": "orders", "rate": 0.5}]
    assert 'data-consume-rate>0.5<' in staff_client.get("/console/").content.decode()
    topics_page = staff_client.get("/console/topics/").content.decode()
    assert "<td>orders</td><td>0.0</td><td>0.5</td>" in topics_page  # nothing appended between the samples


# Purging a dead-letter topic ---------------------------------------------------------------------

def dead_letters():
    topics.create_topic("billing.DLQ", partitions=2)
    producer.send_batch("billing.DLQ", [b"d"] * 4, partition=0)
    producer.send_batch("billing.DLQ", [b"d"] * 2, partition=1)


def test_a_purge_needs_the_name_typed_and_is_audited(staff_client):
    dead_letters()
    refused = staff_client.post("/console/dead-letters/billing.DLQ/purge", {"scope": "all", "confirm_name": "billing"},
                                follow=True)
    assert "type the topic&#x27;s name, billing.DLQ, to purge it" in refused.content.decode()
    assert stored("billing.DLQ") == [0, 0, 1, 1, 2, 3]
    done = staff_client.post("/console/dead-letters/billing.DLQ/purge",
                             {"scope": "before", "partition": "0", "before": "3", "confirm_name": "billing.DLQ"},
                             follow=True)
    assert "purged 3 dead letter(s) from billing.DLQ" in done.content.decode()
    assert stored("billing.DLQ") == [0, 1, 3]
    staff_client.post("/console/dead-letters/billing.DLQ/purge", {"scope": "all", "confirm_name": "billing.DLQ"})
    assert stored("billing.DLQ") == []
    entries = list(models.AuditEntry.objects.order_by("id").values_list("action", "before", "after"))
    assert entries == [
        ("purge dead letters", {"log_starts": {"0": 0}}, {"log_starts": {"0": 3}, "deleted": 3}),
        ("purge dead letters", {"log_starts": {"0": 3, "1": 0}}, {"log_starts": {"0": 4, "1": 2}, "deleted": 3}),
    ]


def test_a_purge_of_a_topic_that_is_not_a_dead_letter_topic_is_refused(staff_client):
    topics.create_topic("orders")
    producer.send_batch("orders", [b"x"] * 2, partition=0)
    response = staff_client.post("/console/dead-letters/orders/purge", {"scope": "all", "confirm_name": "orders"},
                                 follow=True)
    assert "is not a dead-letter topic" in response.content.decode()
    assert stored("orders") == [0, 1] and not models.AuditEntry.objects.exists()


def test_a_purge_beyond_the_log_end_or_with_a_bad_offset_changes_nothing(staff_client):
    dead_letters()
    for before, message in [("9", "beyond the end"), ("x", "must be a whole number")]:
        response = staff_client.post("/console/dead-letters/billing.DLQ/purge", {
            "scope": "before", "partition": "0", "before": before, "confirm_name": "billing.DLQ"}, follow=True)
        assert message in response.content.decode()
    assert len(stored("billing.DLQ")) == 6 and not models.AuditEntry.objects.exists()


def test_a_viewer_cannot_purge_and_a_get_changes_nothing(viewer, staff_client):
    dead_letters()
    assert viewer.post("/console/dead-letters/billing.DLQ/purge",
                       {"scope": "all", "confirm_name": "billing.DLQ"}).status_code == 403
    assert staff_client.get("/console/dead-letters/billing.DLQ/purge").status_code == 405
    assert len(stored("billing.DLQ")) == 6


def test_produce_rates_come_from_the_last_two_topic_samples(staff_client):
    topics.create_topic("orders", partitions=2)
    topics.create_topic("idle")
    producer.send_batch("orders", [b"x"] * 4, partition=0)
    now = timezone.now()
    lag.sample(now=now - datetime.timedelta(seconds=4))
    assert lag.produce_rates() is None  # one round only
    producer.send_batch("orders", [b"y"] * 6, partition=0)
    producer.send_batch("orders", [b"z"] * 2, partition=1)  # 8 more in 4 seconds, over both partitions
    lag.sample(now=now)
    rates = lag.produce_rates()
    assert (rates["topics"]["orders"], rates["topics"]["idle"], rates["window_s"]) == (2.0, 0.0, 4)
    assert rates["total"] == sum(rates["topics"].values()) == 2.0  # the other topics (the shop's) got nothing
    data = staff_client.get("/console/overview.json").json()
    assert {"topic": "orders", "rate": 2.0} in data["produce_rates"]
    page = staff_client.get("/console/topics/?q=ord").content.decode()
    assert "<td>orders</td><td>2.0</td><td>–</td>" in page and "<td>idle</td>" not in page  # no group: no consume rate


def test_the_overview_shows_the_total_backlogs_trend_from_the_lag_samples(staff_client):
    topics.create_topic("orders")
    producer.send_batch("orders", [b"x"] * 10, partition=0)
    consume("billing", "orders", 2)  # lag 8
    data = staff_client.get("/console/overview.json").json()
    assert data["backlog_history"] == [] and data["backlog_trend"] == "needs two samples of the lag sampler"
    now = timezone.now()
    lag.sample(now=now - datetime.timedelta(minutes=2))
    producer.send_batch("orders", [b"y"] * 4, partition=0)  # lag 12
    lag.sample(now=now)
    data = staff_client.get("/console/overview.json").json()
    assert [p["lag"] for p in data["backlog_history"]] == [8, 12]
    assert data["backlog_trend"] == "rising 2.0 records/min over the last 2.0 min"
    page = staff_client.get("/console/").content.decode()
    assert "rising 2.0 records/min" in page and 'aria-label="Total backlog over' in page
