"""The example shop's tables. Coupons, points and notifications are written by idempotent consumers
of the "order.paid" event, never by the payment code itself; an order left unpaid is cancelled by a
countdown task, and unused coupons are expired by a nightly schedule (shop/tasks.py)."""
from django.db import models


class Order(models.Model):
    class Status(models.TextChoices):
        CREATED = "created", "created"
        PAID = "paid", "paid"
        CANCELLED = "cancelled", "cancelled (not paid in time)"

    customer_email = models.EmailField()
    amount_cents = models.PositiveIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.CREATED)
    created_at = models.DateTimeField(auto_now_add=True)
    paid_at = models.DateTimeField(null=True, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)
    cancel_task_id = models.UUIDField(null=True, blank=True,
                                      help_text="the countdown task that cancels the order if it is still unpaid")

    class Meta:
        ordering = ["-id"]

    def __str__(self):
        return f"order {self.id}"


class Payment(models.Model):
    """A payment; with the half-message variant it stands for the remote payment service's own table."""

    order = models.OneToOneField(Order, on_delete=models.CASCADE, related_name="payment")
    amount_cents = models.PositiveIntegerField()
    method = models.CharField(max_length=32, default="card")
    reference = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)


class Coupon(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active", "active"
        USED = "used", "used"
        EXPIRED = "expired", "expired (not used in time)"

    # Deliberately no unique constraint on order: the inbox, not the schema, must keep it to one,
    # and the tests count.
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="coupons")
    code = models.CharField(max_length=32, unique=True)
    percent_off = models.PositiveSmallIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    expires_at = models.DateTimeField(null=True, blank=True, help_text="none: it never expires")
    used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            # The nightly job reads the active coupons past their expiry.
            models.Index(fields=["expires_at"], name="shop_coupon_active_expiry", condition=models.Q(status="active")),
        ]


class PointsEntry(models.Model):
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="points")
    customer_email = models.EmailField()
    points = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)


class Notification(models.Model):
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="notifications")
    channel = models.CharField(max_length=16, default="email")
    message = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)
