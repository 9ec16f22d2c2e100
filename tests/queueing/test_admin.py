"""The engine's admin: changes go through the engine with its refusals; the audit trail is append-only."""
import datetime

import pytest
from django.contrib.messages import get_messages
from django.db import connection
from django.test.utils import CaptureQueriesContext

from queueing import groups, models, offsets, producer, topics


def change_data(client, url, **changes):
    """The change form's current values (inlines' management forms included), with changes applied."""
    page = client.get(url)
    assert page.status_code == 200
    form = page.context["adminform"].form
    data = {}
    for name, field in form.fields.items():
        value = form[name].value()
        data[name] = "" if value is None else value
    for inline in page.context["inline_admin_formsets"]:
        management = inline.formset.management_form
        for name in management.fields:
            data[f"{management.prefix}-{name}"] = management[name].value()
    data.update(changes)
    return data


def join(group, topic_name):
    return groups.join(group, [topic_name], member_id=f"{group}-m1", session_timeout_ms=60_000)


def message_texts(response):
    return [str(m) for m in get_messages(response.wsgi_request)]


def test_deleting_a_group_with_a_live_member_is_refused_and_keeps_it(db, admin_client, topic):
    join("billing", topic.name)
    group = models.ConsumerGroup.objects.get(name="billing")
    response = admin_client.post(f"/admin/queueing/consumergroup/{group.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302 and response.url.endswith(f"/consumergroup/{group.pk}/change/")
    assert message_texts(response) == ["Consumer group 'billing' has 1 live member(s); stop them first."]
    assert models.ConsumerGroup.objects.filter(name="billing").exists()

    groups.leave(group.id, "billing-m1")
    response = admin_client.post(f"/admin/queueing/consumergroup/{group.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not models.ConsumerGroup.objects.filter(name="billing").exists()


def test_the_bulk_delete_of_groups_asks_then_goes_through_the_engine_one_by_one(db, admin_client, topic):
    join("live", topic.name)
    models.ConsumerGroup.objects.create(name="idle")
    ids = list(models.ConsumerGroup.objects.values_list("pk", flat=True))
    action = {"action": "delete_selected", "_selected_action": ids}
    confirm = admin_client.post("/admin/queueing/consumergroup/", action)
    assert confirm.status_code == 200 and "Are you sure" in confirm.content.decode()
    assert models.ConsumerGroup.objects.count() == 2  # asked, nothing deleted yet
    response = admin_client.post("/admin/queueing/consumergroup/", {**action, "post": "yes"})
    assert message_texts(response) == ["Consumer group 'live' has 1 live member(s); stop them first.", "1 deleted."]
    assert list(models.ConsumerGroup.objects.values_list("name", flat=True)) == ["live"]


def test_deleting_a_topic_deletes_its_records(db, admin_client, topic):
    producer.send_batch(topic.name, [b"a", b"b"], partition=0)
    producer.send(topic.name, b"later", delay=datetime.timedelta(hours=1))
    confirm = admin_client.get(f"/admin/queueing/topic/{topic.id}/delete/").content.decode()
    assert f"topic {topic.name}: its 3 partition(s), the 2 record(s) in its log" in confirm
    models.CommittedOffset.objects.create(group=models.ConsumerGroup.objects.create(name="g"), topic=topic_row(topic),
                                          partition=0, offset=1, committed_at=datetime.datetime.now(datetime.UTC))
    response = admin_client.post(f"/admin/queueing/topic/{topic.id}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not models.Topic.objects.filter(id=topic.id).exists()
    assert not models.Record.objects.filter(topic_id=topic.id).exists()
    assert not models.CommittedOffset.objects.exists() and not models.DelayedRecord.objects.exists()


def topic_row(info):
    return models.Topic.objects.get(id=info.id)


def test_the_offset_reset_audit_trail_cannot_be_changed_or_deleted(db, admin_client, topic):
    plan = offsets.plan_reset("g", topic_specs=[topic.name], scenario="to_earliest")
    offsets.execute_reset(plan, actor="ops", scenario="to_earliest")
    row = models.OffsetReset.objects.first()
    listing = admin_client.get("/admin/queueing/offsetreset/").content.decode()
    assert "ops" in listing and "delete_selected" not in listing
    assert admin_client.post("/admin/queueing/offsetreset/", {"action": "delete_selected",
                                                              "_selected_action": [row.pk]}).status_code == 200
    assert admin_client.post(f"/admin/queueing/offsetreset/{row.pk}/delete/", {"post": "yes"}).status_code == 403
    assert admin_client.post(f"/admin/queueing/offsetreset/{row.pk}/change/", {"actor": "x"}).status_code == 403
    assert admin_client.get("/admin/queueing/offsetreset/add/").status_code == 403
    assert list(models.OffsetReset.objects.values_list("actor", flat=True)) == ["ops"] * topic.partition_count


def test_a_group_policy_is_changed_through_the_engine_and_its_refusal_shown(db, admin_client):
    group = groups.configure_group("billing", delivery_limit=3)
    url = f"/admin/queueing/consumergroup/{group.pk}/change/"
    page = admin_client.get(url)
    assert page.context["adminform"].form["backoff_levels_ms"].value() == ""  # it read `null`
    members = next(i for i in page.context["inline_admin_formsets"] if i.formset.prefix == "members")
    assert not members.has_add_permission  # no "Add another group member"
    response = admin_client.post(url, change_data(admin_client, url, backoff="levels", backoff_levels_ms="10,20"))
    assert response.status_code == 302
    group.refresh_from_db()
    assert (group.backoff, group.backoff_levels_ms, group.delivery_limit) == ("levels", [10, 20], 3)

    refused = admin_client.post(url, change_data(admin_client, url, delivery_limit=5000, backoff_max_ms=9))
    assert refused.status_code == 200
    assert "delivery_limit is at most 1000" in refused.content.decode()
    group.refresh_from_db()
    assert (group.delivery_limit, group.backoff_max_ms) == (3, None)  # nothing stored


def test_a_topic_is_altered_through_the_engine_which_refuses_fewer_partitions(db, admin_client, topic):
    url = f"/admin/queueing/topic/{topic.id}/change/"
    response = admin_client.post(url, change_data(admin_client, url, retention_ms=60_000, partition_count=4))
    assert response.status_code == 302
    assert models.Partition.objects.filter(topic_id=topic.id).count() == 4
    assert topics.get_topic(topic.name).retention_ms == 60_000

    refused = admin_client.post(url, change_data(admin_client, url, partition_count=2, retention_ms=5))
    assert refused.status_code == 200
    assert "has 4 partitions; the count can only grow" in refused.content.decode()
    assert topics.get_topic(topic.name).retention_ms == 60_000


def test_group_and_topic_lists_show_lag_and_records_in_a_fixed_number_of_queries(db, admin_client, topic):
    producer.send_batch(topic.name, [b"a", b"b", b"c"], partition=1)
    row = topic_row(topic)
    now = datetime.datetime.now(datetime.UTC)
    models.CommittedOffset.objects.create(group=models.ConsumerGroup.objects.create(name="behind"), topic=row,
                                          partition=1, offset=1, committed_at=now)

    def listing():
        with CaptureQueriesContext(connection) as captured:
            response = admin_client.get("/admin/queueing/consumergroup/")
        return response, len(captured)

    response, few = listing()
    assert [(g.name, g.lag, g.member_count) for g in response.context["cl"].result_list] == [("behind", 2, 0)]
    for n in range(10):
        models.CommittedOffset.objects.create(group=models.ConsumerGroup.objects.create(name=f"g{n}"), topic=row,
                                              partition=1, offset=n % 3, committed_at=now)
    response, many = listing()
    assert few == many
    topics_page = admin_client.get("/admin/queueing/topic/")
    assert [t.records for t in topics_page.context["cl"].result_list if t.name == topic.name] == [3]


@pytest.mark.parametrize("path", ["deliveryattempt", "sharegroup", "delayedrecord"])
def test_the_other_engine_tables_are_listed_without_add(db, admin_client, path):
    assert admin_client.get(f"/admin/queueing/{path}/").status_code == 200
    assert admin_client.get(f"/admin/queueing/{path}/add/").status_code == 403


def test_a_delayed_record_is_cancelled_through_the_engine(db, admin_client, topic):
    producer.send(topic.name, b"later", delay=datetime.timedelta(hours=1))
    waiting = models.DelayedRecord.objects.get()
    response = admin_client.post("/admin/queueing/delayedrecord/",
                                 {"action": "cancel", "_selected_action": [waiting.pk]})
    assert message_texts(response) == ["1 delayed record(s) cancelled."]
    assert not models.DelayedRecord.objects.exists()
