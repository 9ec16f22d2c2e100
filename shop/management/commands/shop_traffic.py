"""manage.py shop_traffic: a burst of paid orders, then the backlog as the consumers drain it."""
import time

from django.core.management.base import CommandError
from django.db import transaction

from outbox import models as outbox_models
from queueing import exceptions, selectors
from queueing.management.base import EngineCommand
from shop import models, services

GROUPS = ("shop-coupons", "shop-points", "shop-notifications")


class Command(EngineCommand):
    help = ("Place and pay a burst of orders (default 10000) as fast as the database takes them, then print the "
            "backlog each second while the relay and the consumers work it off at their own pace.")

    def add_arguments(self, parser):
        parser.add_argument("--orders", type=int, default=10_000)
        parser.add_argument("--batch", type=int, default=200, help="orders paid per transaction")
        parser.add_argument("--watch", type=int, default=120, help="seconds to watch the backlog (0: do not)")
        parser.add_argument("--fail-every", type=int, default=0, metavar="N",
                            help="roll back every Nth batch's payments after publishing (their events must vanish)")

    def handle(self, *args, orders, batch, watch, fail_every, **options):
        if not 1 <= orders <= 1_000_000:
            raise CommandError("--orders must be between 1 and 1000000", returncode=2)
        if not 1 <= batch <= 10_000:
            raise CommandError("--batch must be between 1 and 10000", returncode=2)
        if watch < 0 or fail_every < 0:
            raise CommandError("--watch and --fail-every must be 0 or more", returncode=2)
        started = time.monotonic()
        done = failed = 0
        for number, start in enumerate(range(0, orders, batch), start=1):
            count = min(batch, orders - start)
            placed = models.Order.objects.bulk_create(
                models.Order(customer_email=f"buyer{start + i}@example.com", amount_cents=1000 + (start + i) % 9000)
                for i in range(count)
            )
            try:
                with transaction.atomic():
                    services.pay_orders(placed)
                    if fail_every and number % fail_every == 0:
                        raise services.ShopError("the card was declined")
            except services.ShopError:
                failed += count  # rolled back: no payment, no event
            done += count
            self.stderr.write(f"\rpaid {done - failed}/{orders} orders, {failed} declined "
                              f"({done / (time.monotonic() - started):,.0f}/s)", ending="")
        self.stderr.write("")
        self.stdout.write(f"Paid {orders - failed} orders ({failed} declined, rolled back) "
                          f"in {time.monotonic() - started:.1f}s.")
        if watch:
            self._watch(watch)

    def _watch(self, seconds):
        deadline = time.monotonic() + seconds
        self.stdout.write("seconds  outbox-pending  " + "  ".join(f"{g}-lag" for g in GROUPS))
        started = time.monotonic()
        while True:
            pending = outbox_models.OutboxEvent.objects.filter(delivered_at__isnull=True).count()
            lags = [self._lag(group) for group in GROUPS]
            self.stdout.write(f"{time.monotonic() - started:7.0f}  {pending:14}  " +
                              "  ".join(f"{lag:>{len(g) + 4}}" for lag, g in zip(lags, GROUPS)))
            if pending == 0 and all(lag == 0 for lag in lags):
                self.stdout.write("Backlog drained: every paid order has its coupon, points and notification.")
                return
            if time.monotonic() >= deadline:
                self.stdout.write("Still draining; run the relay and the workers (make run starts them).")
                return
            time.sleep(1)

    @staticmethod
    def _lag(group):
        try:
            rows = selectors.group_partitions(group)
        except exceptions.GroupNotFound:
            return services_backlog()
        return sum(r.lag if r.lag is not None else r.log_end_offset for r in rows)


def services_backlog():
    """A group that never ran has the whole topic as its backlog."""
    from queueing import topics

    try:
        _, partitions = topics.describe_topic(services.ORDER_PAID_TOPIC)
    except exceptions.TopicNotFound:
        return 0
    return sum(p.log_end_offset - p.log_start_offset for p in partitions)
