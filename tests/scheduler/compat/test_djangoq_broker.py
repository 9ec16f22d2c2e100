"""The django-q2 broker on a real PostgreSQL server: every method of django-q2's broker contract, the
package stored unchanged, `bulk` honoured, acknowledgements from another process (the monitor acks
what the pusher acquired), and `retry` honoured as the lock."""
import datetime
import pickle

import pytest
from django.db.models import F
from django_q.conf import Conf
from django_q.signing import SignedPackage

from queueing import models as engine_models
from scheduler.compat import djangoq_broker

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def broker(monkeypatch):
    monkeypatch.setattr(Conf, "BULK", 3)
    monkeypatch.setattr(Conf, "POLL", 0.2)
    monkeypatch.setattr(Conf, "RETRY", 60)
    opened = []

    def open_broker(list_key="tests"):
        made = djangoq_broker.Broker(list_key=list_key)
        opened.append(made)
        return made

    yield open_broker
    for made in opened:
        made.close()


def package(n):
    return SignedPackage.dumps({"id": f"task-{n}", "func": "math.copysign", "args": (n, 1), "kwargs": {}})


def test_a_package_goes_through_unchanged_and_dequeue_honours_bulk(broker):
    pusher = broker()
    sent = [package(n) for n in range(5)]
    for one in sent:
        assert pusher.enqueue(one).startswith("0:")
    assert pusher.queue_size() == 5
    first = pusher.dequeue()
    assert [payload for _, payload in first] == sent[:3]  # bulk = 3
    assert SignedPackage.loads(first[0][1])["id"] == "task-0"
    assert (pusher.queue_size(), pusher.lock_size()) == (2, 3)
    second = pusher.dequeue()
    assert [payload for _, payload in second] == sent[3:]
    assert pusher.dequeue() is None  # empty: after waiting up to poll


def test_the_monitor_acknowledges_what_the_pusher_acquired(broker):
    pusher = broker()
    pusher.enqueue(package(1))
    pusher.enqueue(package(2))
    (first, _), (second, _) = pusher.dequeue()
    monitor = pickle.loads(pickle.dumps(pusher))  # as django-q2 hands a broker to its monitor process
    assert monitor._consumer is None and monitor.list_key == "tests"
    monitor.acknowledge(first)
    monitor.flush()
    assert pusher.lock_size() == 1
    monitor.acknowledge(second)
    monitor.flush()
    assert (pusher.lock_size(), pusher.queue_size()) == (0, 0)
    monitor.acknowledge(second)  # twice: refused quietly, nothing changes
    monitor.close()  # its acknowledging thread ends, with its connection
    assert pusher.dequeue() is None


def test_an_unacknowledged_task_comes_back_once_its_retry_lock_lapses(broker, monkeypatch):
    monkeypatch.setattr(Conf, "RETRY", 2)
    pusher = broker()
    pusher.enqueue(package(1))
    [(ack_id, payload)] = pusher.dequeue()
    assert pusher._consumer.lock_ms == 2000  # the member acquires with retry as its lock
    assert pusher.dequeue() is None  # locked for retry seconds
    engine_models.ShareDelivery.objects.update(lock_until=F("lock_until") - datetime.timedelta(seconds=3))
    [(again, payload_again)] = pusher.dequeue()
    assert payload_again == payload and again != ack_id  # a second delivery, its own id
    monitor = pickle.loads(pickle.dumps(pusher))
    monitor.acknowledge(ack_id)  # the first delivery's: refused (its lock lapsed)
    monitor.flush()
    assert pusher.lock_size() == 1
    monitor.acknowledge(again)
    monitor.close()
    assert pusher.lock_size() == 0


def test_fail_dead_letters_an_unreadable_package(broker):
    pusher = broker()
    pusher.enqueue("not a signed package")
    [(ack_id, _)] = pusher.dequeue()
    pusher.fail(ack_id)
    assert (pusher.queue_size(), pusher.lock_size()) == (0, 0)
    dead = engine_models.DeliveryAttempt.objects.get(group_name="djangoq.tests")
    assert dead.outcome == engine_models.DeliveryAttempt.Outcome.DEAD_LETTERED


def test_delete_purge_and_delete_queue(broker):
    pusher = broker()
    for n in range(4):
        pusher.enqueue(package(n))
    [(held, _), *_] = pusher.dequeue()
    pusher.delete(held)
    assert pusher.purge_queue() == 1  # the ready one; the two still held stay
    assert (pusher.queue_size(), pusher.lock_size()) == (0, 2)
    pusher.delete_queue()
    assert not engine_models.Topic.objects.filter(name="djangoq.tests").exists()
    assert pusher.queue_size() == 0


def test_ping_and_info(broker):
    pusher = broker("other")
    assert pusher.ping() is True
    assert pusher.info() == "Sluice share group djangoq.other"


def test_a_foreign_acknowledgement_id_is_refused_with_a_warning(broker, caplog):
    one = broker()
    one.acknowledge(12)
    one.flush()
    assert "is not an acknowledgement id of this broker" in caplog.text


def test_the_backlog_shows_in_groups_describe_before_a_cluster_reads(broker):
    """One backlog: a django-q2 queue is a topic and share group like any other."""
    from io import StringIO

    from django.core.management import call_command

    pusher = broker("backlog")
    for n in range(3):
        pusher.enqueue(package(n))
    out = StringIO()
    call_command("groups", "describe", "djangoq.backlog", stdout=out)
    row = out.getvalue().splitlines()[1].split()
    assert row[:6] == ["djangoq.backlog", "djangoq.backlog", "0", "0", "3", "3"]  # group, topic, partition, start, end, lag
    pusher.dequeue()
    out = StringIO()
    call_command("groups", "describe", "djangoq.backlog", stdout=out)
    lag, acquired = out.getvalue().splitlines()[1].split()[5:7]
    # ACQUIRED counts the engine's delivery ranges (a batch acquired together is one).
    assert (lag, acquired, pusher.lock_size()) == ("3", "1", 3)


def test_acknowledgements_waiting_when_the_process_exits_are_written_first(broker, process_env):
    """The monitor's acknowledgements wait up to ACK_WINDOW_S for a thread: a process that ends
    meanwhile (django-q2's monitor at a cluster's stop) writes them before it goes."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    pusher = broker()
    pusher.enqueue(package(1))
    [(ack_id, _)] = pusher.dequeue()
    script = (
        "import django, os; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'config.settings'); django.setup()\n"
        "from scheduler.compat import djangoq_broker\n"
        f"djangoq_broker.Broker(list_key='tests').acknowledge({ack_id!r})\n"  # and exit at once, no flush
    )
    done = subprocess.run([sys.executable, "-c", script], env=process_env, cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert (pusher.lock_size(), pusher.queue_size()) == (0, 0)
