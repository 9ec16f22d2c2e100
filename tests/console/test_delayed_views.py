"""The console's delayed-records page: listed soonest first, rescheduled and cancelled through queueing.delayed."""
import pytest
from django.contrib.auth.models import User
from django.test import Client

from console import models
from queueing import models as engine
from queueing import producer, topics


@pytest.fixture
def staff_client(db):
    client = Client()
    client.force_login(User.objects.create_superuser("ops", password="pw-ops-1"))
    return client


def test_a_delayed_record_is_rescheduled_then_cancelled(staff_client):
    topics.create_topic("reminders")
    later = producer.send("reminders", b"ping", key="u-1", delay=3600)
    sooner = producer.send("reminders", b"pong", delay=60)
    page = staff_client.get("/console/delayed/").content.decode()
    assert page.index(f"<td>{sooner.id}</td>") < page.index(f"<td>{later.id}</td>") and "u-1" in page
    staff_client.post(f"/console/delayed/{later.id}/reschedule", {"delay": "10"})
    assert engine.DelayedRecord.objects.get(id=later.id).deliver_at < engine.DelayedRecord.objects.get(
        id=sooner.id).deliver_at
    staff_client.post(f"/console/delayed/{later.id}/cancel")
    assert not engine.DelayedRecord.objects.filter(id=later.id).exists()
    assert [e.action for e in models.AuditEntry.objects.order_by("id")] == [
        "reschedule delayed record", "cancel delayed record"]


def test_a_bad_reschedule_is_refused_and_changes_nothing(staff_client):
    topics.create_topic("reminders")
    sent = producer.send("reminders", b"ping", delay=60)
    due = engine.DelayedRecord.objects.get(id=sent.id).deliver_at
    response = staff_client.post(f"/console/delayed/{sent.id}/reschedule", {"delay": "-5"}, follow=True)
    assert "delay must be a positive number of seconds" in response.content.decode()
    assert engine.DelayedRecord.objects.get(id=sent.id).deliver_at == due
    assert not models.AuditEntry.objects.exists()
