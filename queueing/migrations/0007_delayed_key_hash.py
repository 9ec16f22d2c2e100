"""Delayed records keep their key's murmur2 hash, so the mover places a keyed record in SQL when it
is due (one statement moves records and commits). Records waiting from before get theirs here."""

from django.db import migrations, models

from queueing import partitioner

CHUNK = 1000


def hash_waiting_keys(apps, schema_editor):
    DelayedRecord = apps.get_model("queueing", "DelayedRecord")
    waiting = DelayedRecord.objects.filter(partition__isnull=True, key__isnull=False, key_hash__isnull=True)
    while rows := list(waiting.only("id", "key")[:CHUNK]):
        for row in rows:
            row.key_hash = partitioner.murmur2(bytes(row.key))
        DelayedRecord.objects.bulk_update(rows, ["key_hash"])


class Migration(migrations.Migration):

    dependencies = [
        ('queueing', '0006_delivery_attempt_counts'),
    ]

    operations = [
        migrations.AddField(
            model_name='delayedrecord',
            name='key_hash',
            field=models.IntegerField(help_text="Kafka's murmur2 of the key, when the key picks the partition", null=True),
        ),
        migrations.RunPython(hash_waiting_keys, migrations.RunPython.noop),
    ]
