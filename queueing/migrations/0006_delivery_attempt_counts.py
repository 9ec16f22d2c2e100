"""Counters of delivery attempts per group and outcome, kept by a statement-level trigger, so a
scrape of /metrics reads them instead of counting the attempts."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('queueing', '0005_partition_row_without_checks'),
    ]

    operations = [
        migrations.CreateModel(
            name='DeliveryAttemptCount',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('group_name', models.CharField(max_length=249)),
                ('outcome', models.CharField(choices=[('failed', 'failed (will retry)'), ('released', 'released'), ('rejected', 'rejected'), ('expired', 'lock expired'), ('dead_lettered', 'dead-lettered')], max_length=16)),
                ('count', models.BigIntegerField(default=0)),
            ],
            options={
                'constraints': [models.UniqueConstraint(fields=('group_name', 'outcome'), name='attempt_count_unique')],
            },
        ),
        # One upsert per statement (a bulk_create of expired locks is one statement), from its
        # transition table. Failures only pass here, never a successful delivery, so the counter rows
        # are not on the hot path; attempts recorded before this migration are counted once.
        migrations.RunSQL(
            sql="""
            CREATE FUNCTION queueing_count_attempts() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                INSERT INTO queueing_deliveryattemptcount (group_name, outcome, count)
                SELECT group_name, outcome, count(*) FROM inserted GROUP BY group_name, outcome
                -- Sorted, so two statements upserting the same counters lock them in one order.
                ORDER BY group_name, outcome
                ON CONFLICT (group_name, outcome)
                DO UPDATE SET count = queueing_deliveryattemptcount.count + EXCLUDED.count;
                RETURN NULL;
            END $$;
            CREATE TRIGGER queueing_count_attempts AFTER INSERT ON queueing_deliveryattempt
                REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT EXECUTE FUNCTION queueing_count_attempts();
            INSERT INTO queueing_deliveryattemptcount (group_name, outcome, count)
            SELECT group_name, outcome, count(*) FROM queueing_deliveryattempt GROUP BY group_name, outcome;
            """,
            reverse_sql="""
            DROP TRIGGER queueing_count_attempts ON queueing_deliveryattempt;
            DROP FUNCTION queueing_count_attempts();
            """,
        ),
    ]
