"""The shop's tasks (queue "shop"): place an order for another service (over the REST API), cancel
an order left unpaid, and expire unused coupons every night at 03:00 in the shop's time zone."""
from django.conf import settings

from scheduler import schedules, task
from shop import services

QUEUE = "shop"
EXPIRE_COUPONS = "shop-expire-coupons"


@task(queue=QUEUE, http=True)
def place_order(customer_email, amount_cents):
    """Place an order; submitted over HTTP by services in other languages (POST /api/v1/tasks/)."""
    order = services.place_order(customer_email, amount_cents)
    return {"order_id": order.id, "status": order.status, "amount_cents": order.amount_cents}


@task(queue=QUEUE)
def cancel_unpaid_order(order_id):
    """Enqueued with a countdown when the order is placed; cancelled (never started) when it is paid."""
    return {"order_id": order_id, "cancelled": services.cancel_unpaid_order(order_id)}


@schedules.periodic(cron="0 3 * * *", timezone=settings.SHOP["TIME_ZONE"], name=EXPIRE_COUPONS)
@task(queue=QUEUE)
def expire_coupons():
    return {"expired": services.expire_coupons()}
