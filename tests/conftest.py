"""Shared fixtures: every test runs against a real PostgreSQL server (never a fake)."""
import io
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote, urlsplit

import psycopg
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from psycopg.types.json import JsonbBinaryLoader, JsonbLoader

ROOT = Path(__file__).resolve().parent.parent


# marker: (service, kind of broker URL, its variable, default port)
BROKERS = {"rabbitmq": ("RabbitMQ", "amqp", "AMQP_URL", 5672), "redis": ("Redis", "redis", "REDIS_URL", 6379)}


def pytest_collection_modifyitems(config, items):
    """Skip the tests marked rabbitmq or redis when that server does not answer, and say so in one
    line per service before any test runs (a bare machine runs the rest)."""
    for marker, service, variable, address in _silent_brokers():
        needing = [item for item in items if item.get_closest_marker(marker)]
        if not needing:
            continue
        skip = pytest.mark.skip(reason=f"needs {service} at {address} ({variable}), which does not answer")
        for item in needing:
            item.add_marker(skip)
        if not _is_xdist_worker(config):  # a worker's lines are not shown: the controller says it
            _say(config, f"skipping the {len(needing)} test(s) marked {marker} that need it", service, variable,
                 address)


def pytest_configure(config):
    """Under pytest-xdist (make test) the controller collects nothing: it says which services are
    missing before the workers start, and each worker skips its own tests."""
    if getattr(config.option, "numprocesses", None) and not _is_xdist_worker(config):
        for marker, service, variable, address in _silent_brokers():
            _say(config, f"the tests marked {marker} will be skipped", service, variable, address)


def _is_xdist_worker(config):
    return hasattr(config, "workerinput")


def _silent_brokers():
    """(marker, service, variable, address) of each broker that does not answer."""
    from outbox import destinations

    silent = []
    for marker, (service, kind, variable, port) in BROKERS.items():
        parts = urlsplit(destinations.broker_url(kind))
        address = f"{parts.hostname or '127.0.0.1'}:{parts.port or port}"
        if not _answers(address):
            silent.append((marker, service, variable, address))
    return silent


def _say(config, what, service, variable, address):
    line = (f"services: {service} does not answer at {address} ({variable}): {what}; platform/ensure-services "
            f"starts it (and installs it, as root), or set {variable}")
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    reporter.write_line(line) if reporter else print(line, file=sys.stderr)


def _answers(address):
    host, port = address.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
    except OSError:
        return False
    return True


def database_url(name=None):
    """The URL of the test database (or of database name on the same server), for processes the
    tests start."""
    s = connection.settings_dict
    auth = quote(s["USER"] or "")
    if s["PASSWORD"]:
        auth += ":" + quote(s["PASSWORD"])
    host = s["HOST"] or ""
    name = quote(name or s["NAME"])
    if host.startswith("/"):  # the embedded server's socket folder
        return f"postgresql://{auth}@/{name}?host={quote(host, safe='')}"
    port = f":{s['PORT']}" if s["PORT"] else ""
    return f"postgresql://{auth}@{host}{port}/{name}"


def cut_connection():
    """pg_terminate_backend this thread's database connection from a second one, as a failover or
    a network cut would; the next statement on it fails."""
    from django.db import connections

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    other = connections.create_connection("default")
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
    finally:
        other.close()


def recreate_behind_the_cache(name, partitions=1):
    """Delete and create topic name again while this process's cache still holds the old one (as
    another process's would); return the new TopicInfo."""
    import time

    from queueing import topics

    stale = topics.cached_topic(name)
    topics.delete_topic(name)
    fresh = topics.create_topic(name, partitions=partitions)
    topics._cache[name] = (time.monotonic(), stale)
    return fresh


@pytest.fixture(autouse=True)
def fresh_topic_cache():
    """Producers cache topics for a few seconds; a test's rolled-back topics must not leak into the next."""
    from queueing import topics

    yield
    topics._cache.clear()


@pytest.fixture
def process_env():
    """Environment for a `manage.py` child process that uses the test database."""
    env = dict(os.environ)
    env["DATABASE_URL"] = database_url()
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env.setdefault("SLUICE_LOG_LEVEL", "INFO")
    return env


@pytest.fixture
def manage(process_env):
    """Run `manage.py ARGS` in a child process; return CompletedProcess with text output."""

    def run(*args, input=None, timeout=60, env=None):
        return subprocess.run(
            [sys.executable, str(ROOT / "manage.py"), *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**process_env, **(env or {})},
            cwd=ROOT,
        )

    return run


# Commands that run a loop until stopped: `command` runs them as child processes all the same.
LOOPS = {"worker", "relay", "scheduler", "serve", "runserver"}


@pytest.fixture
def command(manage):
    """Run `manage.py ARGS` in this process, as manage.py runs it from argument parsing on (the
    command's run_from_argv: one-line errors, exit codes, the database connections closed at the
    end); return CompletedProcess with text output. For a test's many wrong-argument cases, where a
    child process each costs its start-up (some 1.7 s); each test still runs its commands once as a
    child process through `manage`. Needs a transactional test (django_db(transaction=True)):
    the command's writes must be committed for it and the test to see each other's. The commands
    of LOOPS go to a child process even so: one that a wrong argument no longer stopped would run
    on in the test's process. env is that child's environment, as for `manage`; the commands run
    here have the test process's settings."""
    from django.core.management import ManagementUtility

    def run(*args, input=None, env=None):
        if args[0] in LOOPS:
            return manage(*args, input=input, env=env)
        argv = ["manage.py", *args]
        stdout, stderr = io.StringIO(), io.StringIO()
        stdin = io.TextIOWrapper(io.BytesIO((input or "").encode()), encoding="utf-8")
        saved = sys.stdin, sys.stdout, sys.stderr
        sys.stdin, sys.stdout, sys.stderr = stdin, stdout, stderr
        try:
            ManagementUtility(argv).fetch_command(args[0]).run_from_argv(argv)
            code = 0
        except SystemExit as exit:
            code = exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
        finally:
            sys.stdin, sys.stdout, sys.stderr = saved
        return subprocess.CompletedProcess(argv, code, stdout.getvalue(), stderr.getvalue())

    return run


@pytest.fixture
def topic(db):
    """A fresh three-partition topic."""
    from queueing import topics

    return topics.create_topic("t.orders", partitions=3)


class CountingCursor(psycopg.Cursor):
    """The engine's cursor, noting each statement it runs."""

    sent = None

    def execute(self, query, *args, **kwargs):
        self.sent.append(str(query))
        return super().execute(query, *args, **kwargs)


def ends_at_stop(thread, asleep, stop):
    """Start thread, wait (bounded) until asleep() says it sleeps on LISTEN, call stop(); return
    whether the thread ended within 5 s, where its sleep, left alone, would last its whole fallback."""
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not asleep() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert asleep()
    finally:
        stop()
        thread.join(5)
    return not thread.is_alive()


def statements(run):
    """The statements run() sends through Django's connection and through the engine's cursor
    (which binds on the server, past Django's query log)."""
    from queueing import storage as engine_storage

    raw = engine_storage.cursor().connection
    own = raw._sluice_cursor
    counting = CountingCursor(raw)
    counting.adapters.register_loader("jsonb", JsonbLoader)
    counting.adapters.register_loader("jsonb", JsonbBinaryLoader)
    counting.sent = []
    raw._sluice_cursor = counting
    try:
        with CaptureQueriesContext(connection) as django_queries:
            run()
    finally:
        raw._sluice_cursor = own
    return [q["sql"] for q in django_queries.captured_queries] + counting.sent
