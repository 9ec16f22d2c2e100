"""The shop's consumers of "order.paid": each in its own group, each idempotent through the inbox."""
from outbox import inbox
from queueing import registry

from shop import services


def _event(record):
    """The CloudEvents envelope's data (the outbox relays the whole envelope as the value)."""
    body = record.data
    return body.get("data", body)


@registry.handler(services.ORDER_PAID_TOPIC, group="shop-coupons")
@inbox.idempotent("shop-coupons")
def issue_coupon(record):
    services.issue_coupon(_event(record))


@registry.handler(services.ORDER_PAID_TOPIC, group="shop-points")
@inbox.idempotent("shop-points")
def award_points(record):
    services.award_points(_event(record))


@registry.handler(services.ORDER_PAID_TOPIC, group="shop-notifications")
@inbox.idempotent("shop-notifications")
def notify(record):
    services.notify(_event(record))
