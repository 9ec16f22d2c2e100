"""The shop's use-cases: place an order, pay it (outbox or half message), and the consumers' effects."""
import secrets

from django.db import transaction
from django.utils import timezone

from shop import models

ORDER_PAID_TOPIC = "shop.order-paid"
PAYMENT_GROUP = "shop-payments"


class ShopError(Exception):
    """The shop cannot do that."""


def place_order(customer_email, amount_cents):
    if not isinstance(amount_cents, int) or not 1 <= amount_cents <= 100_000_000:
        raise ShopError("amount must be between 1 and 100000000 cents")
    return models.Order.objects.create(customer_email=customer_email, amount_cents=amount_cents)


def order_paid_event(order):
    return {"order_id": order.id, "customer_email": order.customer_email, "amount_cents": order.amount_cents}


def pay_order(order_id, method="card"):
    """Record the payment and publish "order.paid" in one transaction (the outbox).

    Paying a paid order is refused; nothing is published for a payment that rolled back.
    """
    from outbox import outbox

    with transaction.atomic():
        order = models.Order.objects.select_for_update().get(id=order_id)
        if order.status == models.Order.Status.PAID:
            raise ShopError(f"order {order_id} is already paid")
        models.Payment.objects.create(order=order, amount_cents=order.amount_cents, method=method,
                                      reference=secrets.token_hex(12))
        order.status = models.Order.Status.PAID
        order.paid_at = timezone.now()
        order.save(update_fields=["status", "paid_at"])
        outbox.publish(
            aggregate_type="order", aggregate_id=str(order.id), event_type="order.paid",
            payload=order_paid_event(order), destination=f"sluice:{ORDER_PAID_TOPIC}",
        )
    return order


def pay_orders(orders, method="card"):
    """Pay many new orders in one transaction: payments, statuses and their events together."""
    from outbox import outbox

    now = timezone.now()
    with transaction.atomic():
        models.Payment.objects.bulk_create(
            models.Payment(order=o, amount_cents=o.amount_cents, method=method, reference=secrets.token_hex(12))
            for o in orders
        )
        models.Order.objects.filter(id__in=[o.id for o in orders], status=models.Order.Status.CREATED).update(
            status=models.Order.Status.PAID, paid_at=now
        )
        outbox.publish_many(
            {"aggregate_type": "order", "aggregate_id": str(o.id), "event_type": "order.paid",
             "payload": order_paid_event(o), "destination": f"sluice:{ORDER_PAID_TOPIC}"}
            for o in orders
        )


def issue_coupon(event):
    order = models.Order.objects.get(id=event["order_id"])
    percent = 10 if order.amount_cents < 10_000 else 15
    return models.Coupon.objects.create(order=order, code=secrets.token_hex(6).upper(), percent_off=percent)


def award_points(event):
    order = models.Order.objects.get(id=event["order_id"])
    return models.PointsEntry.objects.create(order=order, customer_email=order.customer_email,
                                             points=order.amount_cents // 100)


def notify(event):
    order = models.Order.objects.get(id=event["order_id"])
    return models.Notification.objects.create(
        order=order, message=f"Thank you! Order {order.id} is paid ({order.amount_cents / 100:.2f})."
    )
