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


def pay_order_remotely(order_id, method="card", *, die_before_commit=False):
    """The variant for a payment service that lives elsewhere: RocketMQ's half message.

    1. prepare "order.paid" as a half message (stored, invisible); 2. run the payment service's
    local transaction (here the shop's own tables stand in for it); 3. commit the half message. If
    the producer dies between 2 and 3, the check-back asks `payment_checker`, which looks for the
    payment, and the event is published if and only if the payment committed.
    """
    from outbox import half

    order = models.Order.objects.get(id=order_id)
    if order.status == models.Order.Status.PAID:
        raise ShopError(f"order {order_id} is already paid")
    message = half.prepare(
        ORDER_PAID_TOPIC,
        {"type": "order.paid", "subject": str(order.id), "data": order_paid_event(order)},
        key=str(order.id), producer_group=PAYMENT_GROUP, checker=PAYMENT_GROUP,
        headers={"order_id": str(order.id)}, check_interval_ms=5000, max_checks=12,
    )
    try:
        with transaction.atomic():
            locked = models.Order.objects.select_for_update().get(id=order_id)
            if locked.status == models.Order.Status.PAID:
                raise ShopError(f"order {order_id} is already paid")
            models.Payment.objects.create(order=locked, amount_cents=locked.amount_cents, method=method,
                                          reference=f"half-{message.id}")
            locked.status = models.Order.Status.PAID
            locked.paid_at = timezone.now()
            locked.save(update_fields=["status", "paid_at"])
    except BaseException:
        half.rollback(message.id, reason="the payment failed")
        raise
    if die_before_commit:
        return message  # the caller plays a producer that dies here; the check-back resolves it
    half.commit(message.id)
    return message


def payment_checker(message):
    """Check-back for PAYMENT_GROUP: did the payment of this half message commit?"""
    if models.Payment.objects.filter(reference=f"half-{message.id}").exists():
        return "commit"
    return "rollback"


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
