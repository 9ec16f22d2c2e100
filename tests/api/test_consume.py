"""Consuming over HTTP: a share-group member acquires records and accepts, releases or rejects each."""
import json

import pytest
from django.contrib.auth.models import User
from django.db import connection
from rest_framework.test import APIClient

from api import keys
from queueing import consumer, models, producer, topics

ACQUIRE = "/api/v1/share-groups/billing/acquire/"
ACKNOWLEDGE = "/api/v1/share-groups/billing/acknowledge/"


def client_for(*scopes):
    user = User.objects.create_user(f"svc{User.objects.count()}")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {keys.create('svc', user=user, scopes=list(scopes))[1]}")
    return client


@pytest.fixture
def client(db):
    topics.create_topic("orders")
    topics.create_topic("payments")
    for n in range(3):
        producer.send("orders", {"n": n}, key=f"k{n}")
    producer.send("orders", b"\x00raw")
    return client_for("consume:orders")


def acquire(client, **body):
    response = client.post(ACQUIRE, {"topics": ["orders"], "auto_offset_reset": "earliest", **body}, format="json")
    assert response.status_code == 200, response.content
    return response.json()


def ack(record, kind, **extra):
    return {"topic": record["topic"], "partition": record["partition"], "offset": record["offset"],
            "delivery_count": record["delivery_count"], "type": kind, **extra}


def test_records_are_acquired_then_accepted_released_and_rejected(client):
    first = acquire(client, max_records=3, lock_ms=60_000)
    records = first["records"]
    assert [r["value"] for r in records] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert records[0]["key"] == "k0" and records[0]["delivery_count"] == 1 and records[0]["value_encoding"] == "json"
    other = acquire(client)  # another member: the locked records are not its
    assert [(r["offset"], r["value"], r["value_encoding"]) for r in other["records"]] == [(3, "AHJhdw==", "base64")]
    assert other["member_id"] != first["member_id"]
    settled = client.post(ACKNOWLEDGE, {"member_id": first["member_id"], "acks": [
        ack(records[0], "accept"), ack(records[1], "release"), ack(records[2], "reject", reason="bad order")]},
        format="json")
    assert settled.status_code == 200, settled.content
    assert [r["acknowledged"] for r in settled.json()["results"]] == [True, True, True]
    again = acquire(client)
    assert [(r["offset"], r["delivery_count"]) for r in again["records"]] == [(1, 2)]
    dead = models.Record.objects.filter(topic_id=topics.get_topic("billing.DLQ").id).get()
    assert (dead.headers["sluice.dlq.error"], dead.headers["sluice.dlq.offset"]) == ("bad order", "2")
    assert json.loads(bytes(dead.value)) == {"n": 2} and bytes(dead.key) == b"k2"


def test_a_lapsed_lock_is_delivered_again_and_its_late_acknowledgement_refused(client):
    first = acquire(client, max_records=1, lock_ms=1000)
    with connection.cursor() as cursor:
        cursor.execute("UPDATE queueing_sharedelivery SET lock_until = now() - interval '1 second'")
    second = acquire(client, max_records=1)
    assert [(r["offset"], r["delivery_count"]) for r in second["records"]] == [(0, 2)]
    late = client.post(ACKNOWLEDGE, {"member_id": first["member_id"], "acks": [ack(first["records"][0], "accept")]},
                       format="json")
    assert late.status_code == 200 and late.json()["results"][0]["acknowledged"] is False
    on_time = client.post(ACKNOWLEDGE, {"member_id": second["member_id"],
                                        "acks": [ack(second["records"][0], "accept")]}, format="json")
    assert on_time.json()["results"][0]["acknowledged"] is True


def test_a_member_acquires_again_under_its_id_and_waits_for_nothing_when_told(client):
    first = acquire(client, max_records=1)
    more = acquire(client, max_records=1, member_id=first["member_id"])
    assert more["member_id"] == first["member_id"] and more["records"][0]["offset"] == 1
    settled = client.post(ACKNOWLEDGE, {"member_id": first["member_id"], "acks": [
        ack(first["records"][0], "accept"), ack(more["records"][0], "accept")]}, format="json")
    assert [r["acknowledged"] for r in settled.json()["results"]] == [True, True]


def test_scopes_and_members_belong_to_their_credential(client):
    denied = client.post(ACQUIRE, {"topics": ["payments"]}, format="json")
    assert denied.status_code == 403 and "consume:payments" in denied.json()["detail"]
    mine = acquire(client, max_records=1)
    thief = client_for("consume:orders")
    stolen = thief.post(ACKNOWLEDGE, {"member_id": mine["member_id"], "acks": [ack(mine["records"][0], "accept")]},
                        format="json")
    assert stolen.status_code == 403
    assert thief.post(ACQUIRE, {"topics": ["orders"], "member_id": mine["member_id"]}, format="json").status_code == 403
    assert client_for("produce:orders").post(ACQUIRE, {"topics": ["orders"]}, format="json").status_code == 403
    assert models.ShareDelivery.objects.get().member_id == mine["member_id"]


@pytest.mark.parametrize("body,pointer", [
    ({"topics": []}, "#/topics"),
    ({"topics": "orders"}, "#/topics"),
    ({"topics": ["orders"], "max_records": 0}, "#/max_records"),
    ({"topics": ["orders"], "lock_ms": 10}, "#/lock_ms"),
    ({"topics": ["orders"], "wait_ms": 60_000}, "#/wait_ms"),
    ({"topics": ["orders"], "auto_offset_reset": "middle"}, "#/auto_offset_reset"),
    ({"topics": ["orders"], "max_record": 5}, "#/max_record"),
])
def test_bad_acquisitions_are_refused_and_acquire_nothing(client, body, pointer):
    response = client.post(ACQUIRE, body, format="json")
    assert response.status_code == 400 and pointer in [e["pointer"] for e in response.json()["errors"]]
    assert not models.ShareDelivery.objects.exists() and not models.ShareGroup.objects.exists()


def test_unknown_topics_groups_and_records_are_404_and_bad_acks_400(client):
    everywhere = client_for("consume:*")
    assert everywhere.post(ACQUIRE, {"topics": ["nope"]}, format="json").status_code == 404
    assert not models.ShareGroup.objects.exists()
    member = acquire(client, max_records=1)
    record = member["records"][0]
    for body, status in [
        ({"member_id": member["member_id"], "acks": [ack(record, "accept", offset=99)]}, 404),
        ({"member_id": member["member_id"], "acks": [ack(record, "ack")]}, 400),
        ({"member_id": member["member_id"], "acks": []}, 400),
        ({"member_id": member["member_id"], "acks": [ack(record, "accept", delivery_count="1")]}, 400),
        ({"acks": [ack(record, "accept")]}, 400),
    ]:
        response = client.post(ACKNOWLEDGE, body, format="json")
        assert response.status_code == status, (body, response.content)
    missing = client.post("/api/v1/share-groups/nogroup/acknowledge/",
                          {"member_id": member["member_id"], "acks": [ack(record, "accept")]}, format="json")
    assert missing.status_code == 404 and "nogroup" in missing.json()["detail"]
    assert models.ShareDelivery.objects.get().state == models.ShareDelivery.State.ACQUIRED


# Ordered reading, one partition at a time, with explicit commits ---------------------------------


def test_a_partition_is_read_in_order_and_the_group_resumes_from_its_commit(client):
    first = client.get("/api/v1/topics/orders/partitions/0/records/?group=audit&max_records=2")
    assert first.status_code == 200, first.content
    page = first.json()
    assert (page["from_offset"], page["next_offset"], page["log_end_offset"]) == (0, 2, 4)
    assert [r["offset"] for r in page["records"]] == [0, 1]
    committed = client.post("/api/v1/groups/audit/offsets/", {"topic": "orders", "partition": 0,
                                                              "offset": page["next_offset"]}, format="json")
    assert committed.status_code == 200 and committed.json()["offset"] == 2
    resumed = client.get("/api/v1/topics/orders/partitions/0/records/?group=audit").json()
    assert [r["offset"] for r in resumed["records"]] == [2, 3] and resumed["next_offset"] == 4
    assert resumed["records"][1]["value_encoding"] == "base64"
    explicit = client.get("/api/v1/topics/orders/partitions/0/records/?offset=3").json()
    assert [r["offset"] for r in explicit["records"]] == [3]
    end = client.get("/api/v1/topics/orders/partitions/0/records/?offset=9").json()
    assert end["records"] == [] and end["next_offset"] == 9
    assert models.CommittedOffset.objects.get().offset == 2


def test_commits_are_refused_outside_the_log_or_while_the_group_has_members(client):
    for body, status in [({"topic": "orders", "partition": 0, "offset": 5}, 400),
                         ({"topic": "orders", "partition": 3, "offset": 0}, 404),
                         ({"topic": "nope", "partition": 0, "offset": 0}, 403),
                         ({"topic": "orders", "partition": 0, "offset": "1"}, 400),
                         ({"topic": "orders", "partition": 0}, 400)]:
        response = client.post("/api/v1/groups/audit/offsets/", body, format="json")
        assert response.status_code == status, (body, response.content)
    assert not models.ConsumerGroup.objects.exists()
    member = consumer.Consumer("live", ["orders"])
    member.poll(timeout=0)
    try:
        busy = client.post("/api/v1/groups/live/offsets/", {"topic": "orders", "partition": 0, "offset": 1},
                           format="json")
        assert busy.status_code == 409 and "1 live member(s)" in busy.json()["detail"]
    finally:
        member.close(commit=False)
    assert not models.CommittedOffset.objects.exists()


def test_reads_need_a_consume_scope_and_valid_queries(client):
    assert client.get("/api/v1/topics/payments/partitions/0/records/").status_code == 403
    assert client_for("consume:*").get("/api/v1/topics/nope/partitions/0/records/").status_code == 404
    assert client.get("/api/v1/topics/orders/partitions/7/records/").status_code == 404
    for query in ("?offset=-1", "?max_records=0", "?max_records=501", "?offset=x", "?from=1"):
        assert client.get(f"/api/v1/topics/orders/partitions/0/records/{query}").status_code == 400, query


def test_a_retried_acquisition_with_an_idempotency_key_replays_the_same_records(client):
    body = {"topics": ["orders"], "auto_offset_reset": "earliest", "max_records": 2}
    first = client.post(ACQUIRE, body, format="json", HTTP_IDEMPOTENCY_KEY="poll-1")
    again = client.post(ACQUIRE, body, format="json", HTTP_IDEMPOTENCY_KEY="poll-1")
    assert first.status_code == again.status_code == 200 and again["Idempotent-Replayed"] == "true"
    assert again.json() == first.json() and [r["offset"] for r in first.json()["records"]] == [0, 1]
    assert models.ShareDelivery.objects.filter(state=models.ShareDelivery.State.ACQUIRED).count() == 1  # one range
    waiting = client.post(ACQUIRE, dict(body, wait_ms=100), format="json", HTTP_IDEMPOTENCY_KEY="poll-2")
    assert waiting.status_code == 400 and waiting.json()["errors"][0]["pointer"] == "#/wait_ms"
