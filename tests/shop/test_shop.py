import pytest
from django.urls import reverse

from outbox import models as outbox_models
from outbox import relay
from queueing import registry, worker
from shop import models, services


def drain_consumers():
    relay.Relay().run_once()
    for group in ("shop-coupons", "shop-points", "shop-notifications"):
        loop = worker.Worker(group, registry.subscriptions(group), poll_timeout=0.1)
        for _ in range(3):
            loop.run_once()
        loop.consumer.close(commit=False)


def test_paying_an_order_publishes_order_paid_with_the_payment(db):
    order = services.place_order("a@example.com", 1999)
    services.pay_order(order.id)
    event = outbox_models.OutboxEvent.objects.get()
    assert (event.aggregate_id, event.event_type, event.payload["amount_cents"]) == (str(order.id), "order.paid", 1999)
    with pytest.raises(services.ShopError):
        services.pay_order(order.id)
    assert outbox_models.OutboxEvent.objects.count() == 1


def test_a_paid_order_gets_one_coupon_points_and_notification(db):
    order = services.place_order("b@example.com", 25000)
    services.pay_order(order.id)
    drain_consumers()
    drain_consumers()  # delivered twice: the inbox keeps the effects single
    assert order.coupons.count() == 1 and order.coupons.get().percent_off == 15
    assert list(order.points.values_list("points", flat=True)) == [250]
    assert order.notifications.count() == 1


def test_the_pages_place_and_pay_an_order(client, db):
    page = client.get(reverse("shop:orders"))
    assert page.status_code == 200 and b"Place order" in page.content
    bad = client.post(reverse("shop:orders"), {"customer_email": "nope", "amount": "-1"})
    assert bad.status_code == 200 and not models.Order.objects.exists()
    placed = client.post(reverse("shop:orders"), {"customer_email": "c@example.com", "amount": "12.50"})
    order = models.Order.objects.get()
    assert placed.status_code == 302 and order.amount_cents == 1250
    paid = client.post(reverse("shop:pay", args=[order.id]), follow=True)
    assert b"Paid." in paid.content
    drain_consumers()
    detail = client.get(reverse("shop:order", args=[order.id]))
    assert order.coupons.get().code.encode() in detail.content
    assert client.get(reverse("shop:pay", args=[order.id])).status_code == 405
    assert client.get(reverse("shop:order", args=[9999])).status_code == 404


def test_paying_through_the_payment_service_publishes_by_half_message(db):
    from outbox import half

    order = services.place_order("d@example.com", 3000)
    message = services.pay_order_remotely(order.id)
    assert half.status(message.id).state == "committed"
    drain_consumers()
    assert order.coupons.count() == 1 and order.points.count() == 1 and order.notifications.count() == 1


@pytest.mark.parametrize("payment_commits", [True, False])
def test_a_payment_service_dying_before_phase_two_is_resolved_by_check_back(db, payment_commits):
    from django.db import connection

    from outbox import half

    order = services.place_order("e@example.com", 3000)
    if payment_commits:
        message = services.pay_order_remotely(order.id, die_before_commit=True)
    else:  # it died before its local transaction: no payment
        message = half.prepare(services.ORDER_PAID_TOPIC, {"data": {"order_id": order.id}}, producer_group="p",
                               checker=services.PAYMENT_GROUP)
    with connection.cursor() as cursor:
        cursor.execute("UPDATE outbox_halfmessage SET next_check_at = now() - interval '1 second'")
    half.CheckBack().run_once()
    assert half.status(message.id).state == ("committed" if payment_commits else "rolled_back")
    drain_consumers()
    assert order.coupons.count() == (1 if payment_commits else 0)
