"""The partition row, updated by every append, carries no constraint PostgreSQL checks on an update:
the foreign key to the topic and the CHECK on number go (see queueing/models.py, Partition)."""
import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('queueing', '0004_record_segments'),
    ]

    operations = [
        migrations.AlterField(
            model_name='partition',
            name='number',
            field=models.IntegerField(),
        ),
        migrations.AlterField(
            model_name='partition',
            name='topic',
            field=models.ForeignKey(db_constraint=False, db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='partitions', to='queueing.topic'),
        ),
    ]
