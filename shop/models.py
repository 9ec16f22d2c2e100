"""The example shop's tables. Coupons, points and notifications are written by idempotent consumers
of the "order.paid" event, never by the payment code itself."""
from django.db import models


class Order(models.Model):
    class Status(models.TextChoices):
        CREATED = "created", "created"
        PAID = "paid", "paid"

    customer_email = models.EmailField()
    amount_cents = models.PositiveIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.CREATED)
    created_at = models.DateTimeField(auto_now_add=True)
    paid_at = models.DateTimeField(null=True, blank=True)

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
    # Deliberately no unique constraint on order: the inbox, not the schema, must keep it to one,
    # and the tests count.
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="coupons")
    code = models.CharField(max_length=32, unique=True)
    percent_off = models.PositiveSmallIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)


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
