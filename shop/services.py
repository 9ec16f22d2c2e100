"""The shop's use-cases: place an order, pay it (outbox or half message), the consumers' effects,
and the timed ones: cancel an order left unpaid, expire unused coupons."""
import datetime
import logging
import secrets

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from scheduler import control, exceptions as task_exceptions
from shop import models

logger = logging.getLogger("sluice.shop")

ORDER_PAID_TOPIC = "shop.order-paid"
PAYMENT_GROUP = "shop-payments"


class ShopError(Exception):
    """The shop cannot do that."""


def place_order(customer_email, amount_cents):
    """Place an order, and in the same transaction enqueue the task that cancels it if it is still
    unpaid after SHOP["UNPAID_ORDER_TIMEOUT_S"] seconds (both commit, or neither does)."""
    from shop import tasks  # shop.tasks runs these services

    if not isinstance(amount_cents, int) or not 1 <= amount_cents <= 100_000_000:
        raise ShopError("amount must be between 1 and 100000000 cents")
    with transaction.atomic():
        order = models.Order.objects.create(customer_email=customer_email, amount_cents=amount_cents)
        countdown = settings.SHOP["UNPAID_ORDER_TIMEOUT_S"]
        result = tasks.cancel_unpaid_order.using(countdown=countdown).enqueue(order.id)
        order.cancel_task_id = result.id
        order.save(update_fields=["cancel_task_id"])
    return order


def cancel_unpaid_order(order_id):
    """Cancel the order if it is still unpaid (the countdown task's work); return whether it was.

    It locks the order as paying does, so an order is either paid or cancelled, never both.
    """
    with transaction.atomic():
        order = models.Order.objects.select_for_update().filter(id=order_id).first()
        if order is None or order.status != models.Order.Status.CREATED:
            return False
        order.status = models.Order.Status.CANCELLED
        order.cancelled_at = timezone.now()
        order.save(update_fields=["status", "cancelled_at"])
    waited = (order.cancelled_at - order.created_at).total_seconds()
    logger.info("order %s not paid %.0f s after it was placed: cancelled", order_id, waited,
                extra={"order_id": order_id})
    return True


def _take_payment(order):
    """Refuse to pay a locked order twice or after it was cancelled; cancel its countdown task, in
    the payment's transaction, so the task never starts."""
    if order.status == models.Order.Status.PAID:
        raise ShopError(f"order {order.id} is already paid")
    if order.status == models.Order.Status.CANCELLED:
        raise ShopError(f"order {order.id} was cancelled: it was not paid in time")
    if order.cancel_task_id is not None:
        try:
            control.cancel(order.cancel_task_id)
        except (task_exceptions.NotCancellable, task_exceptions.TaskNotFound):
            # Running: it waits for this order's lock, then finds it paid and leaves it. Finished
            # or pruned: it found the order unpaid only if it cancelled it, refused above.
            pass


def order_paid_event(order):
    return {"order_id": order.id, "customer_email": order.customer_email, "amount_cents": order.amount_cents}


def pay_order(order_id, method="card"):
    """Record the payment, cancel the order's countdown task and publish "order.paid" in one
    transaction (the outbox).

    Paying a paid or cancelled order is refused; nothing is published for a payment that rolled back.
    """
    from outbox import outbox

    with transaction.atomic():
        order = models.Order.objects.select_for_update().get(id=order_id)
        _take_payment(order)
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
    """Pay many new orders in one transaction: payments, statuses, their events and the
    cancellation of their countdown tasks together."""
    from outbox import outbox

    now = timezone.now()
    with transaction.atomic():
        for order in orders:
            if order.cancel_task_id is not None:
                try:
                    control.cancel(order.cancel_task_id)
                except (task_exceptions.NotCancellable, task_exceptions.TaskNotFound):
                    pass
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
    if order.status != models.Order.Status.CREATED:
        raise ShopError(f"order {order_id} is {order.status}: it cannot be paid")
    message = half.prepare(
        ORDER_PAID_TOPIC,
        {"type": "order.paid", "subject": str(order.id), "data": order_paid_event(order)},
        key=str(order.id), producer_group=PAYMENT_GROUP, checker=PAYMENT_GROUP,
        headers={"order_id": str(order.id)}, check_interval_ms=5000, max_checks=12,
    )
    try:
        with transaction.atomic():
            locked = models.Order.objects.select_for_update().get(id=order_id)
            _take_payment(locked)
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
    expires_at = timezone.now() + datetime.timedelta(days=settings.SHOP["COUPON_VALID_DAYS"])
    return models.Coupon.objects.create(order=order, code=secrets.token_hex(6).upper(), percent_off=percent,
                                        expires_at=expires_at)


def expire_coupons(now=None):
    """Mark expired the coupons still unused past their expiry (the nightly job); return how many.
    Used coupons, and coupons already expired, are left as they are."""
    expired = models.Coupon.objects.filter(status=models.Coupon.Status.ACTIVE,
                                           expires_at__lte=now or timezone.now())
    count = expired.update(status=models.Coupon.Status.EXPIRED)
    logger.info("%d unused coupon(s) expired", count, extra={"expired": count})
    return count


def award_points(event):
    order = models.Order.objects.get(id=event["order_id"])
    return models.PointsEntry.objects.create(order=order, customer_email=order.customer_email,
                                             points=order.amount_cents // 100)


def notify(event):
    order = models.Order.objects.get(id=event["order_id"])
    return models.Notification.objects.create(
        order=order, message=f"Thank you! Order {order.id} is paid ({order.amount_cents / 100:.2f})."
    )
