"""Running a bench script as `make bench` does, with tiny counts: its own process and database."""
import json
import os
import subprocess
import sys
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from django.conf import settings

from tests.conftest import ROOT, database_url


@pytest.fixture
def run_bench(tmp_path, django_db_blocker):
    """run_bench(script, *args, database=NAME, timeout=S): run bench/script with args, --database
    (this run's test database's name with _bench_NAME after it, so engineers testing at once do not
    collide) and --json; check that it succeeded and dropped its database; return its completed
    process and the rows it wrote."""
    with django_db_blocker.unblock():
        admin = urlunsplit(urlsplit(database_url())._replace(path="/postgres"))

    def run(script, *args, database, timeout):
        name = f"{settings.DATABASES['default']['TEST']['NAME']}_bench_{database}"
        out = tmp_path / "rows.json"
        done = subprocess.run(
            [sys.executable, str(ROOT / "bench" / script), *args, "--database", name, "--json", str(out)],
            env={**os.environ, "DATABASE_URL": admin}, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        with psycopg.connect(admin) as conn:
            assert conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s", [name]).fetchone()[0] == 0
        return done, json.loads(out.read_text())

    return run
