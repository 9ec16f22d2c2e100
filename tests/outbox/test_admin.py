"""Outbox events and half messages in the admin: read-only, half messages resolved through the protocol."""
from django.contrib.messages import get_messages

from outbox import half, models, outbox
from queueing import models as engine_models, topics
from shop import services as shop_services


def test_outbox_events_are_listed_read_only_with_the_backlog_filter(db, admin_client):
    outbox.publish(aggregate_type="order", aggregate_id="7", event_type="paid", payload={}, destination="sluice:x")
    listing = admin_client.get("/admin/outbox/outboxevent/?delivered=no")
    assert [e.aggregate_id for e in listing.context["cl"].result_list] == ["7"]
    event = models.OutboxEvent.objects.get()
    assert admin_client.get("/admin/outbox/outboxevent/add/").status_code == 403
    assert admin_client.post(f"/admin/outbox/outboxevent/{event.pk}/delete/", {"post": "yes"}).status_code == 403
    assert admin_client.post(f"/admin/outbox/outboxevent/{event.pk}/change/", {"payload": "{}"}).status_code == 403


def test_half_messages_are_committed_through_the_protocol_and_a_refusal_is_shown(db, admin_client):
    info = topics.create_topic("h.orders")
    kept = half.prepare("h.orders", b"kept", producer_group="shop", checker=shop_services.PAYMENT_GROUP)
    dropped = half.prepare("h.orders", b"dropped", producer_group="shop", checker=shop_services.PAYMENT_GROUP)
    half.rollback(dropped.id)
    response = admin_client.post("/admin/outbox/halfmessage/",
                                 {"action": "commit", "_selected_action": [kept.pk, dropped.pk]})
    texts = [str(m) for m in get_messages(response.wsgi_request)]
    assert "1 half message(s) committed." in texts
    assert any(str(dropped.id) in text for text in texts)  # HalfMessageResolved: rolled back already
    assert [bytes(r.value) for r in engine_models.Record.objects.filter(topic_id=info.id)] == [b"kept"]
    assert models.HalfMessage.objects.get(pk=dropped.pk).state == "rolled_back"
    assert admin_client.get("/admin/outbox/halfmessage/add/").status_code == 403

