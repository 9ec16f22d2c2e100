"""The REST API's cost: records produced (batches of 100) and single task submissions a second through
/api/v1/, beside the Python API's rates for the same work, in one run.

Usage: DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres python bench/api.py [--batches N]
    [--tasks N] [--rounds K] [--database NAME] [--json PATH]
It creates and drops its own database (sluice_bench_api), and starts the web server `manage.py
serve` runs (gunicorn with 2 worker processes, throttling off) as a process of its own; the client sends one request at a
time, each on a new connection, as a simple service would. Each round measures the Python side and
the HTTP side moments apart, in ABBA order across rounds; the ratio printed is the median of the
per-round ratios (absolute rates on a shared machine move far more than the ratios).
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BATCH = 100
TOPIC = "bench.api"
TASK = "bench.taskapp.tasks.http_noop"


def main():
    parser = argparse.ArgumentParser(description="REST API rates beside the Python API's.")
    parser.add_argument("--batches", type=int, default=100, help="batches of 100 records a side and round")
    parser.add_argument("--tasks", type=int, default=500, help="single task submissions a side and round")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--database", default="sluice_bench_api")
    parser.add_argument("--json", help="write the rows here too")
    args = parser.parse_args()
    import psycopg

    admin = os.environ.get("DATABASE_URL") or sys.exit("api.py: set DATABASE_URL")
    url = urlunsplit(urlsplit(admin)._replace(path="/" + args.database))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{args.database}"')
    env = {**os.environ, "DATABASE_URL": url, "DJANGO_SETTINGS_MODULE": "config.settings",
           "SLUICE_LOG_LEVEL": "WARNING", "SLUICE_EXTRA_APPS": "bench.taskapp", "SLUICE_API_THROTTLE_RATE": ""}
    os.environ.update(env)
    server = None
    try:
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        key = _setup()
        port = _free_port()
        # The web server `manage.py serve` runs: gunicorn, 2 worker processes (each keeps its
        # database connection across requests, SLUICE_CONN_MAX_AGE).
        server = subprocess.Popen([sys.executable, "-m", "gunicorn", "config.wsgi:application", "--bind",
                                   f"127.0.0.1:{port}", "--workers", "2", "--no-control-socket"],
                                  cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        base = f"http://127.0.0.1:{port}/api/v1"
        _wait_for(base, server)
        rows = _measure(args, base, key)
        _print(rows, args)
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=2))
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        from django.db import connections

        connections.close_all()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')


def _setup():
    from django.contrib.auth.models import User

    from api import keys
    from queueing import topics

    topics.create_topic(TOPIC, partitions=1)
    user = User.objects.create_user("bench")
    return keys.create("bench", user=user, scopes=[f"produce:{TOPIC}", f"task:{TASK}"])[1]


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for(base, server, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"api.py: the web server exited: {server.stderr.read().decode()[-2000:]}")
        try:
            urllib.request.urlopen(f"{base}/schema/", timeout=5).close()
            return
        except OSError:
            time.sleep(0.2)
    sys.exit("api.py: the web server did not answer within a minute")


def _post(url, key, body):
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST", headers={
        "Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        response.read()
        if response.status not in (201, 202):
            raise RuntimeError(f"{url}: HTTP {response.status}")


def _records_python(batches):
    from queueing import producer

    values = [{"n": n} for n in range(BATCH)]
    start = time.perf_counter()
    for _ in range(batches):
        producer.send_batch(TOPIC, values)
    return batches * BATCH / (time.perf_counter() - start)


def _records_http(batches, base, key):
    body = {"records": [{"value": {"n": n}} for n in range(BATCH)]}
    start = time.perf_counter()
    for _ in range(batches):
        _post(f"{base}/topics/{TOPIC}/records/", key, body)
    return batches * BATCH / (time.perf_counter() - start)


def _tasks_python(count):
    from scheduler import tasks

    task = tasks.http_task(TASK)
    start = time.perf_counter()
    for _ in range(count):
        task.enqueue()
    return count / (time.perf_counter() - start)


def _tasks_http(count, base, key):
    start = time.perf_counter()
    for _ in range(count):
        _post(f"{base}/tasks/", key, {"name": TASK})
    return count / (time.perf_counter() - start)


def _measure(args, base, key):
    figures = [
        ("records/s, batches of 100", lambda: _records_python(args.batches),
         lambda: _records_http(args.batches, base, key)),
        ("single task submissions/s", lambda: _tasks_python(args.tasks), lambda: _tasks_http(args.tasks, base, key)),
    ]
    # A first, untimed pass: the server's and this process's first requests pay for imports and caches.
    _records_http(2, base, key)
    _tasks_http(2, base, key)
    rows = []
    for name, python_side, http_side in figures:
        pythons, https = [], []
        for round_number in range(args.rounds):
            order = (python_side, http_side) if round_number % 2 == 0 else (http_side, python_side)
            results = {side: side() for side in order}
            pythons.append(results[python_side])
            https.append(results[http_side])
        ratios = [h / p for h, p in zip(https, pythons)]
        rows.append({"figure": name, "python_per_s": statistics.median(pythons), "http_per_s": statistics.median(https),
                     "ratio": statistics.median(ratios), "rounds": args.rounds})
    return rows


def _print(rows, args):
    print(f"REST API beside the Python API ({args.rounds} rounds, medians; one request at a time)")
    print(f"{'figure':<28} {'Python API':>12} {'REST API':>12} {'REST/Python':>12}")
    for row in rows:
        print(f"{row['figure']:<28} {row['python_per_s']:>12,.0f} {row['http_per_s']:>12,.0f} {row['ratio']:>12.2f}")


if __name__ == "__main__":
    main()
