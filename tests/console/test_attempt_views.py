"""The console's retries page: every delivery attempt with its error and traceback, filtered and paged."""
from django.test import Client

from console import attempt_views
from queueing import models
from tests.console.conftest import dead_lettered


def test_the_attempts_of_a_failing_record_show_with_their_errors(viewer):
    dead_lettered()  # billing fails on b"bad" twice, then dead-letters it
    page = viewer.get("/console/retries/")
    assert page.status_code == 200
    text = page.content.decode()
    assert text.count("cannot handle b&#x27;bad&#x27;") >= 2 and "dead-lettered" in text and "failed (will retry)" in text
    assert "<summary>traceback</summary>" in text and "ValueError" in text
    only_dead = viewer.get("/console/retries/?outcome=dead_lettered&group=billing").content.decode()
    only_dead = only_dead.split("<h2>Totals</h2>")[0]  # the attempts, not the totals below them
    assert "dead-lettered</td>" in only_dead and "failed (will retry)</td>" not in only_dead
    assert "orders-0@1" in only_dead  # the record, linked to the message browser
    assert "No attempts recorded." in viewer.get("/console/retries/?group=nobody").content.decode()


def test_older_attempts_are_paged_by_id(viewer, monkeypatch):
    dead_lettered()
    monkeypatch.setattr(attempt_views, "PAGE", 1)
    ids = list(models.DeliveryAttempt.objects.order_by("-id").values_list("id", flat=True))
    assert len(ids) >= 2
    first = viewer.get("/console/retries/").content.decode()
    assert f"before={ids[0]}" in first
    second = viewer.get(f"/console/retries/?before={ids[0]}").content.decode()
    assert f"before={ids[1]}" in second or len(ids) == 2


def test_wrong_filters_are_refused_and_anonymous_visitors_sent_to_log_in(viewer, db):
    bad = viewer.get("/console/retries/?outcome=exploded&before=x")
    assert bad.status_code == 400
    text = bad.content.decode()
    assert "unknown outcome &#x27;exploded&#x27;" in text and "before must be an attempt&#x27;s number" in text
    anonymous = Client().get("/console/retries/")
    assert anonymous.status_code == 302 and "/console/login/" in anonymous["Location"]
