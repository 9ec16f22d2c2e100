"""bench/tasks.py with tiny counts, Sluice only: the harness (databases, worker processes, the
table) keeps working. No timing is asserted; the figures of such a run mean nothing."""
import json
import os
import subprocess
import sys
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.conf import settings

from tests.conftest import ROOT, database_url

pytestmark = pytest.mark.acceptance


def test_the_tasks_bench_runs_sluice_end_to_end_and_drops_its_database(tmp_path, django_db_blocker):
    with django_db_blocker.unblock():
        admin = urlunsplit(urlsplit(database_url())._replace(path="/postgres"))
    # A database named after this run's test database, so engineers testing at once do not collide.
    name = f"{settings.DATABASES['default']['TEST']['NAME']}_bench_tasks"
    out = tmp_path / "rows.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "tasks.py"), "--no-peers", "--tasks", "40", "--singles", "5",
         "--rounds", "1", "--rate", "40", "--latency-seconds", "0.5", "--workers", "1", "--database", name,
         "--json", str(out)],
        env={**os.environ, "DATABASE_URL": admin}, cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Sluice" in done.stdout and "enqueue -> start" in done.stdout
    (sluice,) = json.loads(out.read_text())
    assert sluice["drained"] >= 40 + 5 and not sluice["partial"]  # and the warm-up's enqueues
    assert sluice["single_per_s"] > 0 and sluice["bulk_per_s"] > 0
    assert sluice["latency"]["finished"] == sluice["latency"]["sent"]

    import psycopg

    with psycopg.connect(admin) as conn:
        assert conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s", [name]).fetchone()[0] == 0
