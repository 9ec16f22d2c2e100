"""Share deliveries cover offset ranges; acquisition and acceptance run in one PL/pgSQL call."""
from pathlib import Path

from django.db import migrations, models

FUNCTIONS = (Path(__file__).resolve().parent.parent / "sql" / "functions" / "share_v1.sql").read_text()


class Migration(migrations.Migration):
    dependencies = [("queueing", "0002_delivery")]

    operations = [
        migrations.AddField(
            model_name="sharedelivery",
            name="last_offset",
            field=models.BigIntegerField(default=0),
            preserve_default=False,
        ),
        migrations.RunSQL("UPDATE queueing_sharedelivery SET last_offset = \"offset\"", migrations.RunSQL.noop),
        migrations.RunSQL(
            FUNCTIONS,
            "DROP FUNCTION IF EXISTS sluice_share_poll(bigint, bigint, int, text, int, int, int, bigint[], int[]);"
            "DROP FUNCTION IF EXISTS sluice_share_split(bigint, bigint, int, text, bigint[]);",
        ),
    ]
