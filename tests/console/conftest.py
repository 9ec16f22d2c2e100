"""What the console's tests share: a group whose worker dead-letters a record, run step by step."""
import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client

from queueing import consumer, models, producer, topics
from tests.queueing.test_redrive import Handler, drain as run_worker  # noqa: F401 - shared with the console's tests


@pytest.fixture(autouse=True)
def fast(settings):
    settings.SLUICE = {**settings.SLUICE, "POLL_FALLBACK_MS": 50, "HEARTBEAT_INTERVAL_MS": 60_000,
                       "BACKOFF_BASE_MS": 1, "BACKOFF_MAX_MS": 2}


@pytest.fixture
def staff(db):
    return User.objects.create_superuser("ops", password="pw-ops-1")


@pytest.fixture
def staff_client(staff):
    """A superuser's client: may view and operate."""
    client = Client()
    client.force_login(staff)
    return client


@pytest.fixture
def viewer(db):
    """A staff member's client with the view permission only."""
    user = User.objects.create_user("watcher", password="pw-watch-1", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_console"))
    client = Client()
    client.force_login(user)
    return client


def dead_lettered():
    """orders read by billing, which fails on b"bad" twice and dead-letters it to billing.DLQ."""
    topics.create_topic("orders", partitions=1)
    models.ConsumerGroup.objects.create(name="billing", delivery_limit=2)
    producer.send_batch("orders", [b"ok-1", b"bad", b"ok-2"], key="cust-1")
    handler = Handler(broken={b"bad"})
    run_worker("billing", "orders", handler)
    return handler


def consume(group, topic, count):
    """Read count records of topic as a member of group (all of them, or fail), and commit its offsets."""
    with consumer.Consumer(group, [topic], auto_offset_reset="earliest") as member:
        seen = 0
        for _ in range(100):
            seen += len(member.poll(timeout=0.2, max_records=count - seen))
            if seen >= count:
                break
        member.commit()
    assert seen == count
