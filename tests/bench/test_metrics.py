"""bench/metrics.py with tiny counts: the harness (database, pages, table) keeps working. No timing
is asserted; the figures of such a run mean nothing."""
import json
import os
import subprocess
import sys
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.conf import settings

from tests.conftest import ROOT, database_url

pytestmark = pytest.mark.acceptance


def test_the_metrics_bench_times_every_page_and_drops_its_database(tmp_path, django_db_blocker):
    with django_db_blocker.unblock():
        admin = urlunsplit(urlsplit(database_url())._replace(path="/postgres"))
    name = f"{settings.DATABASES['default']['TEST']['NAME']}_bench_metrics"
    out = tmp_path / "rows.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "metrics.py"), "--topics", "3", "--partitions", "2", "--groups", "2",
         "--records", "600", "--history", "2000", "--scrapes", "1", "--database", name, "--json", str(out)],
        env={**os.environ, "DATABASE_URL": admin}, cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    table = json.loads(out.read_text())
    assert table["records"] == 600
    assert [row["page"] for row in table["pages"]][0] == "/metrics"
    assert table["pages"][0]["full"]["queries"] == 12
    assert "/metrics" in done.stdout and "goal" in done.stdout

    import psycopg

    with psycopg.connect(admin) as conn:
        assert conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s", [name]).fetchone()[0] == 0
