"""Create the shop's topic, "shop.order-paid", with four partitions (keyed by order id)."""
from django.db import migrations

TOPIC = "shop.order-paid"


def create_topic(apps, schema_editor):
    Topic = apps.get_model("queueing", "Topic")
    Partition = apps.get_model("queueing", "Partition")
    if Topic.objects.filter(name=TOPIC).exists():
        return
    topic = Topic.objects.create(name=TOPIC, partition_count=4, max_message_bytes=1024 * 1024)
    Partition.objects.bulk_create(Partition(topic=topic, number=n) for n in range(4))


def delete_topic(apps, schema_editor):
    apps.get_model("queueing", "Topic").objects.filter(name=TOPIC).delete()


class Migration(migrations.Migration):
    dependencies = [("shop", "0001_initial"), ("queueing", "0001_initial")]
    operations = [migrations.RunPython(create_topic, delete_topic)]
