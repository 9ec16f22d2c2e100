"""Operations over HTTP: groups and lag, offset resets (dry run first, audited), dead letters and
their redrive, topics created and altered; all behind the operate scope."""
import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from api import keys
from queueing import models, producer, remote, topics, types


def client_for(*scopes):
    user = User.objects.create_user(f"ops{User.objects.count()}")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {keys.create('ops', user=user, scopes=list(scopes))[1]}")
    return client


@pytest.fixture
def ops(db):
    topics.create_topic("orders", partitions=2)
    for n in range(5):
        producer.send("orders", {"n": n}, partition=n % 2)
    remote.commit("billing", "orders", 0, 1)
    return client_for("operate")


def test_groups_are_listed_with_their_lag_per_partition(ops):
    assert ops.get("/api/v1/groups/").json() == [{"name": "billing", "generation": 0, "members": 0, "state": "Empty"}]
    detail = ops.get("/api/v1/groups/billing/").json()
    assert detail["partitions"] == [{"topic": "orders", "partition": 0, "current_offset": 1, "log_end_offset": 3,
                                     "lag": 2, "member_id": None}]
    assert ops.get("/api/v1/groups/nope/").status_code == 404
    assert client_for("consume:*").get("/api/v1/groups/").status_code == 403


def test_an_offset_reset_is_a_dry_run_unless_executed_and_is_audited(ops):
    body = {"topics": ["orders"], "scenario": "to_earliest"}
    planned = ops.post("/api/v1/groups/billing/offsets/reset/", body, format="json")
    assert planned.status_code == 200, planned.content
    assert planned.json()["executed"] is False and planned.json()["generation_fenced"] is None
    assert [(r["partition"], r["current_offset"], r["new_offset"]) for r in planned.json()["plan"]] == [
        (0, 1, 0), (1, None, 0)]
    assert models.CommittedOffset.objects.get().offset == 1 and not models.OffsetReset.objects.exists()
    done = ops.post("/api/v1/groups/billing/offsets/reset/", {"topics": ["orders:0"], "scenario": "shift_by",
                                                              "value": 1, "execute": True}, format="json")
    assert done.json()["executed"] is True and done.json()["plan"][0]["new_offset"] == 2
    audit = models.OffsetReset.objects.get()
    assert (audit.before, audit.after, audit.scenario) == (1, 2, "shift_by 1") and audit.actor.startswith("api: ops")


@pytest.mark.parametrize("body,pointer", [
    ({"topics": ["orders"], "all_topics": True, "scenario": "to_latest"}, "#/topics"),
    ({"scenario": "to_latest"}, "#/topics"),
    ({"topics": ["orders"], "scenario": "to_offset"}, "#/value"),
    ({"topics": ["orders"], "scenario": "to_offset", "value": "3"}, "#/value"),
    ({"topics": ["orders"], "scenario": "to_datetime", "value": "2026-01-01T00:00:00"}, "#/value"),
    ({"topics": ["orders"], "scenario": "by_duration", "value": "an hour"}, "#/value"),
    ({"topics": ["orders"], "scenario": "to_latest", "value": 1}, "#/value"),
    ({"topics": ["orders"], "scenario": "rewind"}, "#/scenario"),
    ({"topics": ["orders"], "scenario": "to_latest", "execute": "yes"}, "#/execute"),
])
def test_bad_resets_are_refused_and_change_nothing(ops, body, pointer):
    response = ops.post("/api/v1/groups/billing/offsets/reset/", body, format="json")
    assert response.status_code == 400 and pointer in [e["pointer"] for e in response.json()["errors"]]
    assert models.CommittedOffset.objects.get().offset == 1 and not models.OffsetReset.objects.exists()


def test_resets_of_unknown_topics_and_partitions_are_404(ops):
    for topic in ("nope", "orders:7"):
        response = ops.post("/api/v1/groups/billing/offsets/reset/", {"topics": [topic], "scenario": "to_latest",
                                                                      "execute": True}, format="json")
        assert response.status_code == 404
    assert not models.OffsetReset.objects.exists()


def test_dead_letters_are_listed_and_redriven(ops):
    record = remote.acquire("share", ["orders"], member_id="m", auto_offset_reset="earliest", max_records=1)[0]
    remote.acknowledge("share", member_id="m", acks=[(record.topic, record.partition, record.offset, 1, "reject", 0,
                                                      "bad")])
    listed = ops.get("/api/v1/dead-letters/share.DLQ/partitions/0/").json()
    [dead] = listed["records"]
    assert dead["headers"]["sluice.dlq.topic"] == "orders" and dead["headers"]["sluice.dlq.error"] == "bad"
    assert ops.get("/api/v1/share-groups/share/").json()["partitions"][record.partition]["dead_lettered"] == 1
    ends = {p.number: p.next_offset for p in models.Partition.objects.filter(topic__name="orders")}
    planned = ops.post("/api/v1/dead-letters/share.DLQ/redrive/", {}, format="json").json()
    assert (planned["executed"], planned["selected"], planned["replayed"]) == (False, 1, None)
    assert planned["targets"] == [{"topic": "orders", "partition": record.partition, "records": 1}]
    done = ops.post("/api/v1/dead-letters/share.DLQ/redrive/", {"execute": True}, format="json").json()
    assert (done["executed"], done["replayed"], done["skipped"]) == (True, 1, 0)
    after = models.Partition.objects.get(topic__name="orders", number=record.partition).next_offset
    assert after == ends[record.partition] + 1
    # Back to the group that failed it only (other groups reading "orders" pass over the copy).
    orders = topics.get_topic("orders").id
    copy = models.Record.objects.get(topic_id=orders, partition=record.partition, offset=after - 1)
    assert copy.headers[types.REDRIVE_GROUP] == "share"
    everyone = ops.post("/api/v1/dead-letters/share.DLQ/redrive/", {"execute": True, "all_groups": True},
                        format="json").json()
    assert everyone["replayed"] == 1
    copy = models.Record.objects.get(topic_id=orders, partition=record.partition, offset=after)
    assert types.REDRIVE_GROUP not in (copy.headers or {})
    assert ops.post("/api/v1/dead-letters/nope/redrive/", {}, format="json").status_code == 404
    assert ops.post("/api/v1/dead-letters/share.DLQ/redrive/", {"from_offset": "0"}, format="json").status_code == 400


def test_topics_are_created_and_altered(ops):
    created = ops.post("/api/v1/topics/", {"name": "invoices", "partitions": 3, "retention_ms": 60_000},
                       format="json")
    assert created.status_code == 201 and created.json()["partition_count"] == 3
    assert ops.post("/api/v1/topics/", {"name": "invoices"}, format="json").status_code == 409
    assert ops.post("/api/v1/topics/", {"name": "bad name"}, format="json").status_code == 400
    assert ops.post("/api/v1/topics/", {"name": "x", "partitions": "3"}, format="json").status_code == 400
    grown = ops.patch("/api/v1/topics/invoices/", {"partitions": 4, "max_message_bytes": 2048}, format="json")
    assert grown.status_code == 200 and grown.json()["partition_count"] == 4
    assert grown.json()["max_message_bytes"] == 2048 and len(grown.json()["partitions"]) == 4
    shrink = ops.patch("/api/v1/topics/invoices/", {"partitions": 2}, format="json")
    assert shrink.status_code == 400 and "can only grow" in shrink.json()["detail"]
    assert ops.patch("/api/v1/topics/nope/", {"partitions": 2}, format="json").status_code == 404
    assert ops.patch("/api/v1/topics/invoices/", {"name": "y"}, format="json").status_code == 400
    producer_key = client_for("produce:*")
    assert producer_key.post("/api/v1/topics/", {"name": "mine"}, format="json").status_code == 403
    assert producer_key.patch("/api/v1/topics/invoices/", {"partitions": 9}, format="json").status_code == 403
    assert models.Topic.objects.get(name="invoices").partition_count == 4
    assert not models.Topic.objects.filter(name__in=["x", "mine"]).exists()
