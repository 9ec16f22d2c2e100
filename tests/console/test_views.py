"""The console's pages through Django's test client: who may see and act, and what the actions do."""
from django.contrib.auth.models import User
from django.test import Client

from console import lag, models
from outbox import half
from outbox import models as outbox_models
from queueing import producer, topics
from tests.console.conftest import consume, dead_lettered, run_worker


@half.checker("tests.console")
def never_decides(message):
    return "unknown"





def test_an_anonymous_visitor_is_sent_to_the_login_page(db):
    response = Client().get("/console/groups/")
    assert response.status_code == 302
    assert response["Location"] == "/console/login/?next=/console/groups/"


def test_a_user_who_is_not_staff_is_refused(db):
    User.objects.create_user("shopper", password="pw-shop-1")
    client = Client()
    assert client.post("/console/login/", {"username": "shopper", "password": "pw-shop-1"}).status_code == 302
    assert client.get("/console/").status_code == 403


def test_staff_logs_in_and_sees_the_overview(staff):
    client = Client()
    response = client.post("/console/login/", {"username": "ops", "password": "pw-ops-1", "next": "/console/"})
    assert response["Location"] == "/console/"
    page = client.get("/console/")
    assert page.status_code == 200 and b"Total backlog" in page.content


def test_overview_backlog_is_the_groups_lag_from_offsets(staff_client):
    topics.create_topic("orders", partitions=2)
    producer.send_batch("orders", [b"a", b"b", b"c", b"d"], keys=[b"1", b"2", b"3", b"4"])
    consume("billing", "orders", 4)
    producer.send_batch("orders", [b"e", b"f", b"g"], keys=[b"5", b"6", b"7"])
    data = staff_client.get("/console/overview.json").json()
    assert data["backlog"] == 3
    assert data["groups"] == [{"name": "billing", "lag": 3}]
    assert data["records_produced"] == 7


def test_a_viewer_cannot_operate(viewer, db):
    topics.create_topic("payments")
    message = half.prepare("payments", b"v", producer_group="shop", checker="tests.console")
    assert viewer.get("/console/half-messages/").status_code == 200
    assert viewer.post(f"/console/half-messages/{message.id}/commit").status_code == 403
    assert outbox_models.HalfMessage.objects.get(id=message.id).state == "prepared"
    assert not models.AuditEntry.objects.exists()


def test_committing_a_half_message_by_hand_appends_it_and_is_audited(staff_client):
    topics.create_topic("payments")
    message = half.prepare("payments", b"paid", producer_group="shop", checker="tests.console")
    response = staff_client.post(f"/console/half-messages/{message.id}/commit")
    assert response.status_code == 302
    stored = outbox_models.HalfMessage.objects.get(id=message.id)
    assert (stored.state, stored.offset, stored.resolution) == ("committed", 0, "commit by ops from the console")
    entry = models.AuditEntry.objects.get()
    assert (entry.actor, entry.action, entry.target) == ("ops", "half message commit", str(message.id))
    assert entry.after == {"state": "committed", "offset": 0}
    assert b"half message commit" in staff_client.get("/console/audit/").content


def test_rolling_back_a_committed_half_message_is_refused_and_stores_nothing(staff_client):
    topics.create_topic("payments")
    message = half.prepare("payments", b"paid", producer_group="shop", checker="tests.console")
    half.commit(message.id)
    response = staff_client.post(f"/console/half-messages/{message.id}/rollback", follow=True)
    assert b"cannot be rolled back now" in response.content
    assert outbox_models.HalfMessage.objects.get(id=message.id).state == "committed"
    assert not models.AuditEntry.objects.exists()


def test_a_get_cannot_change_state(staff_client):
    topics.create_topic("payments")
    message = half.prepare("payments", b"v", producer_group="shop", checker="tests.console")
    assert staff_client.get(f"/console/half-messages/{message.id}/commit").status_code == 405
    assert outbox_models.HalfMessage.objects.get(id=message.id).state == "prepared"


def test_a_post_without_csrf_is_refused(staff):
    topics.create_topic("payments")
    message = half.prepare("payments", b"v", producer_group="shop", checker="tests.console")
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff)
    assert client.post(f"/console/half-messages/{message.id}/commit").status_code == 403
    assert outbox_models.HalfMessage.objects.get(id=message.id).state == "prepared"


def test_the_group_page_shows_lag_per_partition_and_its_history(staff_client):
    topics.create_topic("orders", partitions=2)
    producer.send_batch("orders", [b"a", b"b"], keys=[b"1", b"2"])
    consume("billing", "orders", 2)
    lag.sample()
    producer.send_batch("orders", [b"c", b"d", b"e"], keys=[b"3", b"4", b"5"])
    lag.sample()
    data = staff_client.get("/console/groups/billing/lag.json").json()
    assert data["lag"] == 3
    assert sum(p["log_end_offset"] for p in data["partitions"]) == 5
    assert [point["lag"] for point in data["history"]] == [0, 3]
    assert staff_client.get("/console/groups/billing/").status_code == 200
    assert staff_client.get("/console/groups/nobody/lag.json").status_code == 404


def test_the_message_browser_shows_json_pretty_and_bytes_as_hex(staff_client):
    topics.create_topic("events")
    producer.send("events", {"order": 7, "paid": True}, key="o-7", headers={"trace": "t-1"})
    producer.send("events", b"\xff\x00raw")
    page = staff_client.get("/console/topics/events/messages/?partition=0&offset=0").content.decode()
    assert '&quot;order&quot;: 7,\n  &quot;paid&quot;: true' in page
    assert "hex: ff 00 72 61 77" in page and "base64: /wByYXc=" in page
    assert "trace" in page and "o-7" in page
    missing = staff_client.get("/console/topics/nothing/messages/")
    # One sentence, the error's own (it read "There is no Topic 'nothing' does not exist..").
    assert missing.status_code == 404 and "<p>Topic &#x27;nothing&#x27; does not exist.</p>" in missing.content.decode()


def test_a_dead_letter_opens_with_its_attempts_and_is_redriven_to_the_group_that_failed(staff_client):
    handler = dead_lettered()
    listing = staff_client.get("/console/dead-letters/").content.decode()
    assert "billing.DLQ" in listing
    opened = staff_client.get("/console/dead-letters/billing.DLQ/?partition=0&open=0").content.decode()
    assert "Failed in group <strong>billing</strong> on orders-0@1" in opened
    assert "cannot handle b&#x27;bad&#x27;" in opened
    response = staff_client.post("/console/dead-letters/billing.DLQ/redrive", {"scope": "selected", "record": ["0:0"]})
    assert response.status_code == 302
    handler.broken.clear()
    run_worker("billing", "orders", handler)
    assert handler.seen == [b"ok-1", b"ok-2", b"bad"]
    entry = models.AuditEntry.objects.get()
    assert (entry.action, entry.target, entry.after) == ("redrive dead letters", "billing.DLQ",
                                                        {"replayed": 1, "skipped": 0})


def test_a_redrive_with_nothing_selected_stores_nothing(staff_client):
    dead_lettered()
    response = staff_client.post("/console/dead-letters/billing.DLQ/redrive", {"scope": "selected"}, follow=True)
    assert "select at least one dead letter" in response.content.decode()
    assert not models.AuditEntry.objects.exists()


def test_an_offset_reset_shows_its_plan_then_applies_it_into_the_audit_log(staff_client):
    topics.create_topic("orders")
    producer.send_batch("orders", [b"a", b"b", b"c"])
    consume("billing", "orders", 3)
    page = staff_client.get("/console/groups/billing/reset/", {"scenario": "shift_by", "value": "-2"}).content.decode()
    assert "<td>orders</td><td>0</td><td>3</td><td>1</td>" in page
    assert lag.current() == [{"group": "billing", "topic": "orders", "lag": 0}]
    staff_client.post("/console/groups/billing/reset/execute", {"scenario": "shift_by", "value": "-2", "topic": ""})
    assert lag.current() == [{"group": "billing", "topic": "orders", "lag": 2}]
    audit_page = staff_client.get("/console/audit/").content.decode()
    assert "reset offset" in audit_page and "billing orders:0" in audit_page


def test_a_reset_with_a_bad_value_is_refused_and_changes_nothing(staff_client):
    topics.create_topic("orders")
    producer.send_batch("orders", [b"a"])
    consume("billing", "orders", 1)
    response = staff_client.post("/console/groups/billing/reset/execute", {"scenario": "to_offset", "value": "x"},
                                 follow=True)
    assert "to_offset needs a whole number" in response.content.decode()
    assert lag.current() == [{"group": "billing", "topic": "orders", "lag": 0}]


def test_topics_are_created_grown_and_deleted_only_with_their_name_typed(staff_client):
    staff_client.post("/console/topics/create", {"name": "invoices", "partitions": "2"})
    staff_client.post("/console/topics/invoices/partitions", {"partitions": "4"})
    assert topics.get_topic("invoices").partition_count == 4
    refused = staff_client.post("/console/topics/invoices/delete", {"confirm_name": "invoice"}, follow=True)
    assert "type the topic&#x27;s name, invoices, to delete it" in refused.content.decode()
    assert topics.get_topic("invoices").partition_count == 4
    staff_client.post("/console/topics/invoices/delete", {"confirm_name": "invoices"})
    assert "invoices" not in {t.name for t in topics.list_topics()}
    assert list(models.AuditEntry.objects.order_by("id").values_list("action", flat=True)) == [
        "create topic", "add partitions", "delete topic"]


def test_a_bad_topic_name_is_refused_and_nothing_is_stored(staff_client):
    response = staff_client.post("/console/topics/create", {"name": "bad name!", "partitions": "1"}, follow=True)
    assert response.status_code == 200 and b"class=\"message error\"" in response.content
    assert "bad name!" not in {t.name for t in topics.list_topics()}
    assert not models.AuditEntry.objects.exists()


def test_an_outbox_event_that_failed_is_shown_and_retried_now(staff_client):
    from outbox import outbox, relay

    event = outbox.publish(aggregate_type="order", aggregate_id="7", event_type="order.paid", payload={"n": 7},
                           destination="sluice:nowhere")
    loop = relay.Relay()
    try:
        loop.run_once()
    finally:
        loop.close()
    failed = outbox_models.OutboxEvent.objects.get(seq=event.seq)
    assert failed.attempts == 1 and failed.last_error and failed.next_attempt_at > failed.created_at
    page = staff_client.get("/console/outbox/").content.decode()
    assert "sluice:nowhere" in page and f'value="{event.seq}"' in page
    staff_client.post("/console/outbox/retry", {"scope": "selected", "event": [str(event.seq)]})
    retried = outbox_models.OutboxEvent.objects.get(seq=event.seq)
    assert retried.next_attempt_at < failed.next_attempt_at and retried.attempts == 1
    assert models.AuditEntry.objects.get().after == {"made_due": 1}


def test_the_overview_says_what_needs_attention_first(staff_client):
    dead_lettered()
    producer.send("orders", b"late", key="cust-2")
    data = staff_client.get("/console/overview.json").json()
    assert data["attention"] == ["group billing has 1 records waiting and no member alive", "1 dead letters waiting"]
    assert data["tasks"]["failed"] == 0
    assert "group billing has 1 records waiting" in staff_client.get("/console/").content.decode()


def test_a_share_groups_page_shows_records_in_flight(staff_client):
    from queueing import share

    topics.create_topic("jobs")
    producer.send_batch("jobs", [b"1", b"2", b"3"])
    member = share.ShareConsumer("crew", ["jobs"], max_records=2, auto_offset_reset="earliest")
    try:
        assert len(member.poll(timeout=0)) == 2
        page = staff_client.get("/console/share-groups/crew/").content.decode()
    finally:
        member.close()
    # window from 0, acquire offset 2, log end 3; the two records held are one delivery range (the
    # selector counts ranges), none waiting again, delivered once, none dead-lettered, backlog 3
    assert "<td>jobs</td><td>0</td><td>0</td><td>2</td><td>3</td><td>1</td><td>0</td><td>1</td><td>0</td><td>3</td>" in page
    missing = staff_client.get("/console/share-groups/nobody/")
    assert missing.status_code == 404 and "<p>There is no share group &#x27;nobody&#x27;.</p>" in missing.content.decode()


def test_sign_ins_to_the_console_are_throttled_per_address(db, settings):
    settings.SLUICE_API = {**settings.SLUICE_API, "LOGIN_THROTTLE_RATE": "2/minute"}
    client = Client()
    for _ in range(2):
        assert client.post("/console/login/", {"username": "x", "password": "wrong"}).status_code == 200
    refused = client.post("/console/login/", {"username": "x", "password": "wrong"})
    assert refused.status_code == 429 and "Too many login attempts" in refused.content.decode()
