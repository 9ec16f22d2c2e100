"""The shop's timers under `manage.py serve`, across processes: serve runs a worker for the shop's
queue and a scheduler; an order placed here and left unpaid is cancelled by its countdown task
there, one paid here is not, and its task never starts; the nightly schedule is synced with its
next run at 03:00 in the shop's zone."""
import signal
import subprocess
import sys
import time

import pytest

from scheduler import cron, exceptions, results, schedules
from shop import models, services, tasks
from tests.conftest import ROOT

pytestmark = [pytest.mark.acceptance, pytest.mark.django_db(transaction=True)]


def test_serve_cancels_an_unpaid_order_by_its_countdown_and_syncs_the_nightly_schedule(process_env, settings):
    settings.SHOP = {**settings.SHOP, "UNPAID_ORDER_TIMEOUT_S": 2}
    serve = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "serve", "--no-web"],
        env={**process_env, "SHOP_TIME_ZONE": "Australia/Lord_Howe"}, cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        paid = services.place_order("prompt@example.com", 1000)
        services.pay_order(paid.id)
        # Due after the paid order's: once it is cancelled, the worker is past the paid one's time.
        unpaid = services.place_order("late@example.com", 1000)
        deadline = time.monotonic() + 90
        while models.Order.objects.get(id=unpaid.id).status != "cancelled":
            assert time.monotonic() < deadline, "the unpaid order was not cancelled"
            time.sleep(0.2)
        while True:  # the scheduler syncs the declared schedules when it starts
            try:
                nightly = schedules.get(tasks.EXPIRE_COUPONS)
                break
            except exceptions.ScheduleNotFound:
                assert time.monotonic() < deadline, "the nightly schedule was not synced"
                time.sleep(0.2)
        serve.send_signal(signal.SIGTERM)
        stdout, stderr = serve.communicate(timeout=40)
    finally:
        serve.kill()
    assert serve.returncode == 0, stderr
    assert "started task worker shop #1" in stdout and "started scheduler" in stdout and "restart" not in stderr
    countdown = results.get(unpaid.cancel_task_id)
    assert (countdown.state, countdown.return_value) == ("succeeded", {"order_id": unpaid.id, "cancelled": True})
    never = results.get(paid.cancel_task_id)
    assert (never.state, never.row.attempts, never.attempts()) == ("cancelled", 0, [])
    assert models.Order.objects.get(id=paid.id).status == "paid"
    # The scheduler process read SHOP_TIME_ZONE from its environment.
    assert nightly.timezone == "Australia/Lord_Howe"
    local = nightly.next_run_at.astimezone(cron.zone(nightly.timezone))
    assert local.strftime("%H:%M") == "03:00"
