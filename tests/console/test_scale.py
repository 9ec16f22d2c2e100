"""The landing page and the console's lists at scale: a fixed number of queries whatever the number
of topics and groups, none of them over the log's records (EXPLAIN says which tables each reads)."""
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from bench import metrics as bench_metrics  # its EXPLAIN of a page's queries for reads of the log
from queueing import models, producer, topics, views

# Every page that lists topics or groups or sums the log, as bench/console.py times them at scale.
LISTS = ["/", "/console/", "/console/overview.json", "/console/topics/", "/console/groups/",
         "/console/groups/g00/", "/console/groups/g00/lag.json", "/console/dead-letters/"]



def build(count):
    """count topics of 2 partitions with records, count groups with offsets on them and a member each."""
    now = timezone.now()
    for n in range(count):
        topics.create_topic(f"t{n:02d}", partitions=2)
        producer.send_batch(f"t{n:02d}", [b"x"] * 3, partition=n % 2)
        group = models.ConsumerGroup.objects.create(name=f"g{n:02d}", generation=1)
        topic = models.Topic.objects.get(name=f"t{n:02d}")
        models.CommittedOffset.objects.bulk_create(
            models.CommittedOffset(group=group, topic=topic, partition=p, offset=1, committed_at=now) for p in (0, 1))
        models.GroupMember.objects.create(id=f"g{n:02d}-1", group=group, topics=[], session_timeout_ms=10_000,
                                          joined_at=now, last_heartbeat=now)
    topics.create_topic("g00.DLQ", partitions=1)


def queries(client, page):
    with CaptureQueriesContext(connection) as captured:
        assert client.get(page).status_code == 200, page
    return [q["sql"] for q in captured.captured_queries]


def test_the_lists_run_the_same_queries_for_3_topics_and_groups_as_for_30(viewer):
    build(3)
    few = {page: len(queries(viewer, page)) for page in LISTS}
    now = timezone.now()
    for n in range(3, 30):
        topics.create_topic(f"t{n:02d}", partitions=2)
        group = models.ConsumerGroup.objects.create(name=f"g{n:02d}", generation=1)
        models.GroupMember.objects.create(id=f"g{n:02d}-1", group=group, topics=[], session_timeout_ms=10_000,
                                          joined_at=now, last_heartbeat=now)
    many = {page: len(queries(viewer, page)) for page in LISTS}
    assert many == few


@pytest.mark.parametrize("page, most", [("/", 6), ("/console/groups/", 6), ("/console/", 23),
                                        ("/console/overview.json", 23), ("/console/topics/", 9)])
def test_a_list_page_keeps_to_its_queries(viewer, page, most, django_assert_max_num_queries):
    build(12)
    with django_assert_max_num_queries(most):
        assert viewer.get(page).status_code == 200


def test_no_list_page_reads_the_log(viewer):
    build(5)
    for page in LISTS:
        statements = queries(viewer, page)
        assert not [sql for sql in statements if "queueing_record" in sql], page
        assert bench_metrics.log_scans(statements) == [], page


def test_the_landing_page_lists_the_first_topics_and_groups_and_links_the_rest(viewer, monkeypatch):
    monkeypatch.setattr(views, "HOME_ROWS", 5)
    build(8)
    page = viewer.get("/").content.decode()
    first = list(models.Topic.objects.order_by("name").values_list("name", flat=True))
    assert "<td>g00.DLQ</td><td>1</td><td>0</td>" in page
    assert all(f"<td>{name}</td>" in page for name in first[:5])
    assert not any(f"<td>{name}</td>" in page for name in first[5:])
    assert "<td>t00</td><td>2</td><td>3</td>" in page
    assert f"The first 5 of {len(first)} topics" in page
    assert "<td>g04</td><td>Stable</td><td>1</td><td>1</td>" in page
    assert "The first 5 of 8 consumer groups" in page
