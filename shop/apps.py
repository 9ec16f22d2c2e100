"""The order-paid -> coupon example: orders, payments, coupons, points and notifications."""
from django.apps import AppConfig


class ShopConfig(AppConfig):
    name = "shop"
    verbose_name = "Example shop"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # The check-back loop (halfmessages checkback) finds the shop's payment checker by name.
        from outbox import half
        from shop import services

        half.checker(services.PAYMENT_GROUP)(services.payment_checker)
