"""Retire DRF's plain-text tokens: their table is dropped (the keys were readable in the database)
and rest_framework.authtoken leaves INSTALLED_APPS. Services move to hashed API keys
(`manage.py apikeys create`); a request still sending `Authorization: Token …` gets a 401 that says so.
Not reversible: the plain-text keys are gone on purpose."""
from django.db import migrations

RETIRE = """
DROP TABLE IF EXISTS authtoken_token CASCADE;
DELETE FROM django_migrations WHERE app = 'authtoken';
"""


class Migration(migrations.Migration):
    dependencies = [("api", "0001_api_keys")]

    operations = [migrations.RunSQL(RETIRE, reverse_sql=migrations.RunSQL.noop)]
