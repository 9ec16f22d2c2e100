"""manage.py shop_demo: leave an order unpaid for its countdown task to cancel, and show the nightly schedule."""
from ops.management.commands.serve import parse_address
from queueing.management.base import EngineCommand
from scheduler import results, schedules
from shop import selectors, services


class Command(EngineCommand):
    help = ("Place an order and leave it unpaid: its countdown task cancels it after SHOP_UNPAID_ORDER_TIMEOUT_S "
            "seconds once a worker of queue 'shop' and the delayed-record mover run (`serve` runs both). Then sync "
            "the schedules declared in code and print the shop's nightly one with its next runs.")

    def add_arguments(self, parser):
        parser.add_argument("--addr", default="127.0.0.1:8000", help="where the web server listens (for the link)")

    def handle(self, *args, addr, **options):
        parse_address(addr)  # before the order is placed: the link it prints must be one
        order = services.place_order("demo@example.com", 4200)
        task = results.get(order.cancel_task_id)
        wait = (task.row.eta - order.created_at).total_seconds()
        self.stdout.write(
            f"shop: order #{order.id} placed and left unpaid; its countdown task {task.id} ({task.state}) cancels it "
            f"at {task.row.eta.isoformat(timespec='seconds')} ({wait:.0f} s) unless it is paid first: "
            f"http://{addr}/shop/orders/{order.id}/")
        schedules.sync()  # what a scheduler does when it starts; idempotent
        for view in selectors.shop_schedules(count=2):
            row = view.schedule
            runs = ", ".join(f"{local} ({utc} UTC)" for utc, local in view.next_runs)
            self.stdout.write(f"shop: schedule {row.name} runs {row.task_name} at cron '{row.cron}' in {row.timezone}; "
                              f"next runs {runs}")
