"""The shop on the task layer: an unpaid order is cancelled by a countdown task that paying cancels,
and a nightly schedule in the shop's time zone expires unused coupons."""
import datetime
import re
import time

import pytest
from django.conf import settings
from django.db import connection, transaction
from django.urls import reverse
from django.utils import timezone

from outbox import models as outbox_models
from queueing import delayed, models as engine_models
from scheduler import cron, models as task_models, results, schedules, worker
from scheduler import exceptions as task_errors, tasks as task_layer
from shop import models, services, tasks

DAY = datetime.timedelta(days=1)


@pytest.fixture
def short_timeout(settings):
    settings.SHOP = {**settings.SHOP, "UNPAID_ORDER_TIMEOUT_S": 1}
    settings.SLUICE = {**settings.SLUICE, "POLL_FALLBACK_MS": 50}


@pytest.fixture
def shop_worker():
    loop = worker.TaskWorker(tasks.QUEUE, poll_timeout=0.1)
    yield loop
    loop.stop()
    loop.close()


def work_until(loop, condition, timeout=60):
    """Move due delayed records into the log and step the worker until condition() holds (bounded)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        delayed.move_due()
        loop.run_once()


def test_placing_an_order_enqueues_its_countdown_in_the_same_transaction(db):
    order = services.place_order("a@example.com", 1000)
    task = results.get(order.cancel_task_id)
    assert (task.row.task_name, task.row.queue, task.row.args, task.state) == (
        tasks.cancel_unpaid_order.name, "shop", [order.id], "scheduled")
    timeout = settings.SHOP["UNPAID_ORDER_TIMEOUT_S"]
    assert order.created_at + datetime.timedelta(seconds=timeout - 5) < task.row.eta
    assert engine_models.DelayedRecord.objects.get(id=task.row.delayed_id).deliver_at == task.row.eta
    with pytest.raises(RuntimeError), transaction.atomic():
        services.place_order("b@example.com", 2000)
        raise RuntimeError("the caller's transaction rolls back")
    assert list(models.Order.objects.values_list("id", flat=True)) == [order.id]
    assert task_models.TaskResult.objects.count() == engine_models.DelayedRecord.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_the_countdown_task_cancels_an_unpaid_order(short_timeout, shop_worker):
    order = services.place_order("c@example.com", 1000)
    task = results.get(order.cancel_task_id)
    work_until(shop_worker, lambda: task.refresh().finished)
    order.refresh_from_db()
    assert (task.state, task.return_value) == ("succeeded", {"order_id": order.id, "cancelled": True})
    assert order.status == "cancelled" and order.cancelled_at >= order.created_at + datetime.timedelta(seconds=1)
    with pytest.raises(services.ShopError, match=f"order {order.id} was cancelled"):
        services.pay_order(order.id)
    assert not models.Payment.objects.exists() and not outbox_models.OutboxEvent.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_paying_cancels_the_countdown_task_so_it_never_starts(short_timeout, shop_worker):
    paid = services.place_order("d@example.com", 1000)
    services.pay_order(paid.id)
    paid_task = results.get(paid.cancel_task_id)
    assert paid_task.state == "cancelled"
    assert not engine_models.DelayedRecord.objects.filter(id=paid_task.row.delayed_id).exists()
    # An order placed after it, left unpaid: once the worker has cancelled it, it has passed the
    # paid order's time too.
    unpaid = services.place_order("e@example.com", 1000)
    later = results.get(unpaid.cancel_task_id)
    assert later.row.eta >= paid_task.row.eta
    work_until(shop_worker, lambda: later.refresh().finished)
    paid.refresh_from_db()
    assert later.state == "succeeded" and paid.status == "paid"
    assert (paid_task.refresh().state, paid_task.row.attempts, paid_task.attempts()) == ("cancelled", 0, [])
    assert task_models.TaskAttempt.objects.filter(task_id=paid_task.id).count() == 0


def test_paying_through_the_payment_service_cancels_the_countdown_too(db):
    order = services.place_order("f@example.com", 1000)
    services.pay_order_remotely(order.id)
    assert results.get(order.cancel_task_id).state == "cancelled"
    assert not services.cancel_unpaid_order(order.id)  # a countdown that ran anyway leaves a paid order
    order.refresh_from_db()
    assert order.status == "paid"


def coupon(code, *, status="active", expires_at=None):
    order = models.Order.objects.create(customer_email=f"{code}@example.com", amount_cents=100)
    return models.Coupon.objects.create(order=order, code=code, percent_off=10, status=status, expires_at=expires_at)


def test_the_nightly_job_expires_only_unused_coupons_past_their_expiry(db):
    now = timezone.now()
    coupon("STALE", expires_at=now - DAY)
    coupon("FRESH", expires_at=now + DAY)
    coupon("USED", status="used", expires_at=now - DAY)
    coupon("GONE", status="expired", expires_at=now - DAY)
    coupon("FOREVER")
    assert services.expire_coupons() == 1
    assert {c.code: c.status for c in models.Coupon.objects.all()} == {
        "STALE": "expired", "FRESH": "active", "USED": "used", "GONE": "expired", "FOREVER": "active"}
    assert services.expire_coupons() == 0


def test_an_issued_coupon_expires_after_the_configured_days(db, settings):
    settings.SHOP = {**settings.SHOP, "COUPON_VALID_DAYS": 7}
    order = services.place_order("g@example.com", 1000)
    issued = services.issue_coupon({"order_id": order.id})
    assert issued.status == "active"
    assert abs(issued.expires_at - (issued.created_at + 7 * DAY)) < datetime.timedelta(seconds=5)


@pytest.mark.django_db(transaction=True)
def test_the_nightly_schedule_is_declared_in_the_shops_zone_and_runs_the_job(shop_worker):
    assert tasks.EXPIRE_COUPONS in schedules.sync()[0]
    row = schedules.get(tasks.EXPIRE_COUPONS)
    assert (row.kind, row.cron, row.timezone, row.source, row.task_name) == (
        "cron", "0 3 * * *", settings.SHOP["TIME_ZONE"], "code", tasks.expire_coupons.name)
    zone = cron.zone(row.timezone)
    assert [t.astimezone(zone).strftime("%H:%M") for t in schedules.next_runs(row, 3)] == ["03:00"] * 3
    now = timezone.now()
    coupon("STALE", expires_at=now - DAY)
    coupon("USED", status="used", expires_at=now - DAY)
    coupon("FRESH", expires_at=now + DAY)
    # Move the schedule's tick into the past rather than waiting for 03:00.
    with connection.cursor() as cursor:
        cursor.execute("SELECT now() - interval '1 second'")
        due = cursor.fetchone()[0]
    task_models.Schedule.objects.filter(id=row.id).update(next_run_at=due)
    assert schedules.fire_due() == (1, False)
    tick = task_models.ScheduleTick.objects.get(schedule=row)
    job = results.get(tick.task_id)
    work_until(shop_worker, lambda: job.refresh().finished)
    assert (job.state, job.return_value) == ("succeeded", {"expired": 1})
    assert dict(models.Coupon.objects.values_list("code", "status")) == {
        "STALE": "expired", "USED": "used", "FRESH": "active"}
    assert schedules.get(tasks.EXPIRE_COUPONS).next_run_at.astimezone(zone).strftime("%H:%M") == "03:00"


def test_the_pages_show_the_countdown_the_cancellation_and_the_schedule(client, db):
    client.post(reverse("shop:orders"), {"customer_email": "h@example.com", "amount": "12.50"})
    order = models.Order.objects.get()
    detail = client.get(reverse("shop:order", args=[order.id])).content.decode()
    assert f"task <code>{order.cancel_task_id}</code> (scheduled) cancels this order at" in detail
    services.cancel_unpaid_order(order.id)
    detail = client.get(reverse("shop:order", args=[order.id])).content.decode()
    assert re.search(r"Cancelled at \d\d:\d\d:\d\d UTC: not paid within \d+ s", detail) and "Pay</button>" not in detail
    schedules.sync()
    listing = client.get(reverse("shop:orders")).content.decode()
    row = schedules.get(tasks.EXPIRE_COUPONS)
    local = row.next_run_at.astimezone(cron.zone(row.timezone)).isoformat(timespec="seconds")
    assert f'id="schedule-{tasks.EXPIRE_COUPONS}"' in listing and local in listing and "T03:00:00" in local


def test_shop_demo_leaves_an_order_unpaid_and_shows_the_schedule(transactional_db, manage):
    done = manage("shop_demo", "--addr", "127.0.0.1:8123", env={"SHOP_UNPAID_ORDER_TIMEOUT_S": "60"})
    assert done.returncode == 0, done.stderr
    order = models.Order.objects.get()
    assert order.status == "created"
    first, second = done.stdout.splitlines()
    assert re.fullmatch(rf"shop: order #{order.id} placed and left unpaid; its countdown task {order.cancel_task_id} "
                        rf"\(scheduled\) cancels it at \S+ \(60 s\) unless it is paid first: "
                        rf"http://127\.0\.0\.1:8123/shop/orders/{order.id}/", first), first
    assert re.fullmatch(rf"shop: schedule {tasks.EXPIRE_COUPONS} runs {re.escape(tasks.expire_coupons.name)} at cron "
                        r"'0 3 \* \* \*' in \S+; next runs \S+T03:00:00\S+ \(\S+ UTC\), \S+T03:00:00\S+ \(\S+ UTC\)",
                        second), second


def test_shop_demo_with_a_wrong_address_places_no_order(transactional_db, manage):
    done = manage("shop_demo", "--addr", "nonsense")
    assert done.returncode == 2
    assert done.stderr.strip() == ("CommandError: 'nonsense' is not an address: give HOST:PORT, [IPV6]:PORT or PORT "
                                   "(1-65535)")
    assert not models.Order.objects.exists()


def test_other_services_may_place_orders_over_http_and_nothing_else(db):
    """shop.tasks.place_order is the shop's one task marked http=True (docs/api.md submits it)."""
    assert task_layer.http_task("shop.tasks.place_order") is tasks.place_order
    for name in (tasks.cancel_unpaid_order.name, tasks.expire_coupons.name):
        with pytest.raises(task_errors.TaskNotRegistered):
            task_layer.http_task(name)
    placed = tasks.place_order("ana@example.com", 1250)
    order = models.Order.objects.get(id=placed["order_id"])
    assert (placed["status"], order.amount_cents, order.cancel_task_id is not None) == ("created", 1250, True)
