"""bench/latency.py with one short cell: the harness (its database, the sender and consumer
processes, the table) keeps working, and a burst cell is judged by the rate its bursts came at. No
timing is asserted; the figures of such a run mean nothing."""
import json
import os
import subprocess
import sys
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.conf import settings

from tests.conftest import ROOT, database_url

pytestmark = pytest.mark.acceptance


def test_a_burst_cell_runs_end_to_end_and_is_judged_by_its_bursts_rate(tmp_path, django_db_blocker):
    with django_db_blocker.unblock():
        admin = urlunsplit(urlsplit(database_url())._replace(path="/postgres"))
    # A database named after this run's test database, so engineers testing at once do not collide.
    name = f"{settings.DATABASES['default']['TEST']['NAME']}_bench_latency"
    out = tmp_path / "rows.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "latency.py"), "--only", "bursts", "--only", "1000/s", "--only",
         "ordered", "--seconds", "1", "--database", name, "--json", str(out)],
        env={**os.environ, "DATABASE_URL": admin}, cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (row,) = json.loads(out.read_text())
    assert row["producer"] == "send, bursts of 25 x4" and row["consumer"] == "ordered"
    assert row["lost"] == 0 and row["duplicates"] == 0 and row["received"] == row["sent"] > 0
    assert row["late_wakeups"] == 0
    assert row["burst_rate"] > 0
    assert row["p99_goal_ms"] == (15 if row["burst_rate"] <= 1000 else 50)
    assert f"bursts came at {row['burst_rate']:,}/s" in row["notes"]
    assert "send, bursts of 25 x4" in done.stdout

    import psycopg

    with psycopg.connect(admin) as conn:
        assert conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s", [name]).fetchone()[0] == 0
