import http.server
import json
import subprocess
import sys
import threading
import time

import pytest
from django.contrib.auth.models import Group
from django.db import connection

from outbox import exceptions, half, models
from queueing import consumer, topics
from queueing import exceptions as queueing_exceptions
from tests.conftest import ROOT


@pytest.fixture
def topic(db):
    return topics.create_topic("payments", partitions=2)


@half.checker("tests.payments")
def payment_committed(message):
    """The producer's answer: its local transaction left a Group named paid-<id>."""
    if Group.objects.filter(name=f"paid-{message.id}").exists():
        return "commit"
    return message.headers.get("answer", "rollback") if message.headers else "rollback"


def make_due(message_id=None):
    with connection.cursor() as cursor:
        cursor.execute("UPDATE outbox_halfmessage SET next_check_at = now() - interval '1 second'"
                       + ("" if message_id is None else " WHERE id = %s"), [] if message_id is None else [message_id])


def visible(topic_name):
    member = consumer.Consumer(f"reader-{time.monotonic_ns()}", [topic_name], auto_offset_reset="earliest")
    try:
        return [r.value for r in member.poll(timeout=0.2)]
    finally:
        member.close(commit=False)


def test_a_half_message_is_invisible_until_committed(topic):
    message = half.prepare("payments", b"paid", key="order-1", producer_group="shop", checker="tests.payments")
    assert visible("payments") == []
    committed = half.commit(message.id)
    assert committed.state == "committed" and committed.offset == 0
    assert visible("payments") == [b"paid"]
    assert half.commit(message.id).offset == 0  # idempotent
    with pytest.raises(exceptions.HalfMessageResolved):
        half.rollback(message.id)
    assert visible("payments") == [b"paid"]


def test_a_rolled_back_half_message_never_appears(topic):
    message = half.prepare("payments", {"order": 2}, producer_group="shop", checker="tests.payments")
    half.rollback(message.id)
    half.rollback(message.id)
    with pytest.raises(exceptions.HalfMessageResolved):
        half.commit(message.id)
    assert visible("payments") == []


def test_the_local_transaction_helper(topic):
    with half.local_transaction("payments", b"ok", producer_group="shop", checker="tests.payments"):
        pass
    with pytest.raises(RuntimeError):
        with half.local_transaction("payments", b"no", producer_group="shop", checker="tests.payments"):
            raise RuntimeError
    assert visible("payments") == [b"ok"]
    assert sorted(models.HalfMessage.objects.values_list("state", flat=True)) == ["committed", "rolled_back"]


@pytest.mark.parametrize("kwargs,error", [
    ({"topic": "missing"}, queueing_exceptions.TopicNotFound),
    ({"checker": ""}, queueing_exceptions.InvalidArgument),
    ({"checker": None, "callback_url": "ftp://x"}, queueing_exceptions.InvalidArgument),
    ({"checker": "nobody.registered"}, queueing_exceptions.InvalidArgument),
    ({"callback_url": "http://127.0.0.1:9/"}, queueing_exceptions.InvalidArgument),  # with a checker too
    ({"checker": None}, queueing_exceptions.InvalidArgument),
    ({"max_checks": 0}, queueing_exceptions.InvalidArgument),
    ({"unresolved_policy": "maybe"}, queueing_exceptions.InvalidArgument),
    ({"producer_group": ""}, queueing_exceptions.InvalidArgument),
])
def test_bad_half_messages_are_refused(topic, kwargs, error):
    arguments = {"topic": "payments", "producer_group": "shop", "checker": "tests.payments", **kwargs}
    with pytest.raises(error):
        half.prepare(arguments.pop("topic"), b"v", **arguments)
    assert not models.HalfMessage.objects.exists()


def test_unknown_ids_are_not_found(db):
    for bad in ("not-a-uuid", "00000000-0000-0000-0000-000000000000"):
        with pytest.raises(exceptions.HalfMessageNotFound):
            half.status(bad)


def test_unknown_until_the_maximum_then_the_policy_decides(topic):
    rolled = half.prepare("payments", b"r", producer_group="shop", checker="tests.payments", max_checks=3,
                          headers={"answer": "unknown"})
    kept = half.prepare("payments", b"c", producer_group="shop", checker="tests.payments", max_checks=2,
                        headers={"answer": "unknown"}, unresolved_policy="commit")
    loop = half.CheckBack()
    for _ in range(4):
        make_due()
        loop.run_once()
    rolled, kept = half.status(rolled.id), half.status(kept.id)
    assert rolled.state == "rolled_back" and "unresolved after 3 checks" in rolled.resolution
    assert [c.result for c in rolled.checks.order_by("number")] == ["unknown"] * 3
    assert kept.state == "committed" and kept.checks.count() == 2
    assert visible("payments") == [b"c"]


PRODUCER = """
import os, signal, sys
sys.path.insert(0, {root!r})
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
import django; django.setup()
from django.contrib.auth.models import Group
from django.db import transaction
from outbox import half
half.checker("tests.payments")(lambda message: "unknown")  # registered here too; the test's process answers
message = half.prepare("payments", b"charged", producer_group="shop", checker="tests.payments")
print(message.id, flush=True)
if {run_local}:
    with transaction.atomic():
        Group.objects.create(name=f"paid-{{message.id}}")   # the local transaction commits
os.kill(os.getpid(), signal.SIGKILL)                          # ... and the producer dies before phase two
"""


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("local_committed,expected", [(True, "committed"), (False, "rolled_back")])
def test_a_producer_crash_before_phase_two_is_resolved_by_check_back(process_env, local_committed, expected):
    topics.create_topic("payments", partitions=2)
    process = subprocess.run([sys.executable, "-c", PRODUCER.format(root=str(ROOT), run_local=local_committed)],
                             env=process_env, capture_output=True, text=True, timeout=60)
    assert process.returncode == -9, process.stderr
    message_id = process.stdout.split()[0]
    assert half.status(message_id).state == "prepared" and visible("payments") == []
    make_due(message_id)
    half.CheckBack().run_once()
    assert half.status(message_id).state == expected
    assert visible("payments") == ([b"charged"] if local_committed else [])


class Answer(http.server.BaseHTTPRequestHandler):
    answers = {}

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        answer = Answer.answers[body["id"]]
        if answer == "slow":
            time.sleep(2)
            answer = "commit"
        payload = json.dumps({"status": answer}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def callback_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/check"
    server.shutdown()


def test_http_callbacks_commit_roll_back_and_time_out(topic, callback_server, settings):
    settings.SLUICE = {**settings.SLUICE, "CHECKBACK_TIMEOUT_S": 0.5}
    settings.SLUICE_HALF_CALLBACK_ALLOW = ["127.0.0.1"]
    yes = half.prepare("payments", b"yes", producer_group="svc", callback_url=callback_server)
    no = half.prepare("payments", b"no", producer_group="svc", callback_url=callback_server)
    slow = half.prepare("payments", b"slow", producer_group="svc", callback_url=callback_server, max_checks=5)
    Answer.answers.update({str(yes.id): "commit", str(no.id): "rollback", str(slow.id): "slow"})
    make_due()
    half.CheckBack().run_once()
    assert half.status(yes.id).state == "committed"
    assert half.status(no.id).state == "rolled_back"
    slow = half.status(slow.id)
    assert slow.state == "prepared" and [c.result for c in slow.checks.all()] == ["timeout"]
    assert visible("payments") == [b"yes"]
