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


@pytest.mark.parametrize("peer", ["celery-sluice", "django-q2-sluice"])
def test_the_sluice_compatibility_peers_run_end_to_end(peer, tmp_path, django_db_blocker):
    """Celery on Sluice and django-q2 on Sluice, as bench/tasks.py runs them beside their peers:
    their own database, migrated, real workers, a full drain. No timing is asserted."""
    with django_db_blocker.unblock():
        admin = urlunsplit(urlsplit(database_url())._replace(path="/postgres"))
    name = f"{settings.DATABASES['default']['TEST']['NAME']}_bench_{peer.replace('-', '_')}"
    out = tmp_path / "row.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "task_peers.py"), peer, "--tasks", "20", "--singles", "2",
         "--drain-timeout", "60", "--database", name, "--logs", str(tmp_path), "--json", str(out)],
        env={**os.environ, "DATABASE_URL": admin}, cwd=ROOT, capture_output=True, text=True, timeout=240,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    row = json.loads(out.read_text())
    if "skipped" in row:
        pytest.skip(f"{peer}: {row['skipped']}")
    assert row["drained"] >= 22 and not row["partial"]
