"""sluice_share_poll, version 2: a poll of a partition with nothing to acquire is a read (no lock, no
row version, no WAL), where version 1 locked and updated the group's partition row every time."""
from pathlib import Path

from django.db import migrations

FUNCTIONS = Path(__file__).resolve().parent.parent / "sql" / "functions"


class Migration(migrations.Migration):
    dependencies = [("queueing", "0007_delayed_key_hash")]

    operations = [
        migrations.RunSQL((FUNCTIONS / "share_v2.sql").read_text(), (FUNCTIONS / "share_v1.sql").read_text()),
    ]
