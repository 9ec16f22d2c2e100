"""The shop's tasks (queue "shop"): cancel an order left unpaid, and expire unused coupons every
night at 03:00 in the shop's time zone."""
from django.conf import settings

from scheduler import schedules, task
from shop import services

QUEUE = "shop"
EXPIRE_COUPONS = "shop-expire-coupons"


@task(queue=QUEUE)
def cancel_unpaid_order(order_id):
    """Enqueued with a countdown when the order is placed; cancelled (never started) when it is paid."""
    return {"order_id": order_id, "cancelled": services.cancel_unpaid_order(order_id)}


@schedules.periodic(cron="0 3 * * *", timezone=settings.SHOP["TIME_ZONE"], name=EXPIRE_COUPONS)
@task(queue=QUEUE)
def expire_coupons():
    return {"expired": services.expire_coupons()}
