"""bench/api.py with tiny counts: the harness (its database, the web server, the table) keeps working.
No timing is asserted; the figures of such a run mean nothing."""
import json
import os
import subprocess
import sys
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from django.conf import settings

from tests.conftest import ROOT, database_url

pytestmark = pytest.mark.acceptance


def test_the_api_bench_runs_both_sides_and_drops_its_database(tmp_path, django_db_blocker):
    with django_db_blocker.unblock():
        admin = urlunsplit(urlsplit(database_url())._replace(path="/postgres"))
    name = f"{settings.DATABASES['default']['TEST']['NAME']}_bench_api"
    out = tmp_path / "rows.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "api.py"), "--batches", "3", "--tasks", "5", "--rounds", "2",
         "--database", name, "--json", str(out)],
        env={**os.environ, "DATABASE_URL": admin}, cwd=ROOT, capture_output=True, text=True, timeout=180,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "REST/Python" in done.stdout
    rows = json.loads(out.read_text())
    assert [row["figure"] for row in rows] == ["records/s, batches of 100", "single task submissions/s"]
    assert all(row["python_per_s"] > 0 and row["http_per_s"] > 0 and row["rounds"] == 2 for row in rows)
    with psycopg.connect(admin) as conn:
        assert conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s", [name]).fetchone()[0] == 0
