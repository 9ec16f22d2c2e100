# The relay's per-aggregate ordering probe on undelivered events only (see claim_events in
# outbox/sql/events.sql). Built CONCURRENTLY so publishers are not blocked on a large outbox table.

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):

    atomic = False

    dependencies = [
        ('outbox', '0001_initial'),
    ]

    operations = [
        AddIndexConcurrently(
            model_name='outboxevent',
            index=models.Index(condition=models.Q(('delivered_at__isnull', True)), fields=['aggregate_type', 'aggregate_id', 'seq'], name='outbox_pending_aggregate'),
        ),
    ]
