"""One peer of bench/tasks.py, measured in a process of its own: single enqueue, bulk enqueue, and the
drain of no-op tasks by 2 worker processes (or the peer's equivalent), each peer run the way its
documentation shows. Prints nothing but errors; writes its row as JSON.

Usage: DATABASE_URL=postgres://… python bench/task_peers.py PEER --json PATH [--tasks N] [--singles N]
A peer whose package or server is missing gives a row {"system": …, "skipped": reason}.
"""
import argparse
import asyncio
import gc
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import tasks as harness

ROOT = harness.ROOT
REDIS = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379")
AMQP = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
# Redis databases of their own, flushed before and after: Celery's broker on Redis and its results.
CELERY_BROKER_DB, CELERY_RESULTS_DB = 12, 11


def reachable(url, default_port):
    parts = urlsplit(url)
    try:
        socket.create_connection((parts.hostname, parts.port or default_port), timeout=2).close()
        return True
    except OSError:
        return False


def timed(count, call):
    gc.collect()  # garbage of the set-up is not the enqueue's (bench/tasks.py does the same for Sluice)
    began = time.perf_counter()
    call(count)
    return round(harness.run.rate(count, time.perf_counter() - began))


class Peer:
    """A peer: set up, enqueue, start workers, count what is done, clean up. url is its database's."""

    name = ""
    package = ""
    results = ""
    notes = ""
    uses_database = True
    unset = ()  # variables of this process's environment the workers must not have

    def __init__(self, url):
        self.url = url
        self.env = {"BENCH_PEER": self.name, "BENCH_PEER_DATABASE_URL": url or "",
                    "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        os.environ.update(self.env)

    def unavailable(self):
        """Why this peer cannot run here, or None."""
        try:
            __import__(self.package)
        except ImportError as error:
            return f"{error} (`make bench` installs the bench group of pyproject.toml)"
        return None

    def setup(self):
        """Install the peer's schema (or empty its queues)."""

    def single(self, count):
        """Enqueue count tasks one by one, each committed on its own."""
        raise NotImplementedError

    def bulk(self, count):
        """Enqueue count tasks the fastest way the peer offers."""
        raise NotImplementedError

    def workers(self):
        """[(name, command)] of the worker processes."""
        raise NotImplementedError

    def done(self):
        """A function returning how many tasks have finished (successfully)."""
        raise NotImplementedError

    def cleanup(self):
        pass


def sql_counter(url, query):
    import psycopg

    conn = psycopg.connect(url, autocommit=True)
    return lambda: conn.execute(query).fetchone()[0]


class PgQueuer(Peer):
    name, package = "pgqueuer", "pgqueuer"
    results = "none (a job's log row)"
    notes = "pgqueuer.run() (as pgq run) x2, defaults (batch of 10); bulk: enqueue() of lists"

    def setup(self):
        import subprocess

        subprocess.run([sys.executable, "-m", "pgqueuer", "install"], env={**os.environ, "PGDSN": self.url},
                       check=True, capture_output=True)
        self.enqueued = 0

    def _enqueue(self, count, batch):
        import psycopg
        from pgqueuer import PsycopgDriver, Queries

        async def go():
            async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
                queries = Queries(PsycopgDriver(conn))
                for start in range(0, count, batch):
                    size = min(batch, count - start)
                    if batch == 1:
                        await queries.enqueue("noop", None)
                    else:
                        await queries.enqueue(["noop"] * size, [None] * size, [0] * size)

        asyncio.run(go())
        self.enqueued += count

    def single(self, count):
        self._enqueue(count, 1)

    def bulk(self, count):
        self._enqueue(count, harness.BULK_BATCH)

    def workers(self):
        command = [sys.executable, "-m", "bench.peers.pgqueuer_app"]  # pgqueuer.run(), as `pgq run` does
        self.env["PGDSN"] = self.url
        return [(f"pgqueuer-{n}", command) for n in range(2)]

    def done(self):
        remaining = sql_counter(self.url, "SELECT count(*) FROM pgqueuer")
        return lambda: self.enqueued - remaining()


class Procrastinate(Peer):
    name, package = "procrastinate", "procrastinate"
    results = "none (job status kept)"
    notes = "procrastinate worker x2, defaults; bulk: batch_defer()"

    def setup(self):
        from bench.peers import procrastinate_app

        self.app = procrastinate_app.app
        self.app.open()
        self.app.schema_manager.apply_schema()

    def single(self, count):
        from bench.peers import procrastinate_app

        for _ in range(count):
            procrastinate_app.noop.defer()

    def bulk(self, count):
        from bench.peers import procrastinate_app

        for start in range(0, count, harness.BULK_BATCH):
            procrastinate_app.noop.batch_defer(*[{}] * min(harness.BULK_BATCH, count - start))

    def workers(self):
        command = [sys.executable, "-m", "procrastinate", "--app", "bench.peers.procrastinate_app.app", "worker"]
        return [(f"procrastinate-{n}", command) for n in range(2)]

    def done(self):
        return sql_counter(self.url, "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'")

    def cleanup(self):
        if hasattr(self, "app"):
            self.app.close()


class DjangoPeer(Peer):
    """A peer that is a Django app: the bench's own settings (bench/peers/django_settings.py)."""

    def setup(self):
        os.environ["DJANGO_SETTINGS_MODULE"] = self.env["DJANGO_SETTINGS_MODULE"] = "bench.peers.django_settings"
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)

    def manage(self, *args):
        return [sys.executable, "-m", "django", *args]

    def cleanup(self):
        from django.db import connections

        connections.close_all()


class DjangoQ2(DjangoPeer):
    name, package = "django-q2", "django_q"
    results = "stored (Task table)"
    notes = "qcluster, ORM broker, workers 2; no bulk call: async_task() in a loop, one transaction"

    def single(self, count):
        from django_q.tasks import async_task

        for _ in range(count):
            async_task("bench.peers.django_noop.noop")

    def bulk(self, count):
        from django.db import transaction
        from django_q.tasks import async_task

        with transaction.atomic():
            for _ in range(count):
                async_task("bench.peers.django_noop.noop")

    def workers(self):
        return [("django-q2-cluster", self.manage("qcluster"))]

    def done(self):
        return sql_counter(self.url, "SELECT count(*) FROM django_q_task WHERE success")


class DjangoTasks(DjangoPeer):
    name, package = "django-tasks", "django_tasks_db"
    results = "stored (result row)"
    notes = "django-tasks-db: db_worker x2, defaults; no bulk call: enqueue() in a loop, one transaction"

    def single(self, count):
        from django.db import transaction

        from bench.peers import django_noop

        for _ in range(count):
            with transaction.atomic():
                django_noop.noop_task.enqueue()

    def bulk(self, count):
        from django.db import transaction

        from bench.peers import django_noop

        with transaction.atomic():
            for _ in range(count):
                django_noop.noop_task.enqueue()

    def workers(self):
        return [(f"django-tasks-{n}", self.manage("db_worker")) for n in range(2)]

    def done(self):
        return sql_counter(self.url, "SELECT count(*) FROM django_tasks_database_dbtaskresult "
                                     "WHERE status = 'SUCCESSFUL'")


class Celery(Peer):
    """Celery, prefork with concurrency 2, results in Redis. The same app and worker settings for
    every broker (bench/peers/celery_app.py): issue 12's Celery on Sluice is one more subclass."""

    package = "celery"
    results = "stored (Redis result backend)"
    notes = "prefork -c 2; not transactional; no bulk call: delay() in a loop"
    uses_database = False
    broker = ""
    # A plain Celery program whatever the broker: with DJANGO_SETTINGS_MODULE set (`make bench` sets
    # it), Celery installs its Django fix-up, which runs hooks at every task; Sluice's
    # `sluice+postgresql://` sets Django up by itself.
    unset = ("DJANGO_SETTINGS_MODULE",)

    def __init__(self, url):
        super().__init__(url)
        self.env.update(BENCH_CELERY_BROKER=self.broker, BENCH_CELERY_RESULTS=f"{REDIS}/{CELERY_RESULTS_DB}")
        os.environ.update(self.env)

    def unavailable(self):
        if not reachable(REDIS, 6379):
            return f"Redis (its result backend) unreachable at {REDIS}"
        return super().unavailable()

    def _redis(self, db):
        import redis

        return redis.Redis.from_url(f"{REDIS}/{db}")

    def setup(self):
        from bench.peers import celery_app

        self.app = celery_app
        self._redis(CELERY_RESULTS_DB).flushdb()
        celery_app.app.control.purge()

    def single(self, count):
        for _ in range(count):
            self.app.noop.delay()

    bulk = single

    def workers(self):
        return [("celery", [sys.executable, "-m", "celery", "-A", "bench.peers.celery_app", "worker",
                            "--pool", "prefork", "--concurrency", "2", "--loglevel", "WARNING"])]

    def done(self):
        results = self._redis(CELERY_RESULTS_DB)
        return results.dbsize

    def cleanup(self):
        if hasattr(self, "app"):
            self.app.app.control.purge()
        self._redis(CELERY_RESULTS_DB).flushdb()


class CeleryRedis(Celery):
    name = "celery-redis"
    broker = f"{REDIS}/{CELERY_BROKER_DB}"

    def cleanup(self):
        super().cleanup()
        self._redis(CELERY_BROKER_DB).flushdb()


class CeleryRabbitMQ(Celery):
    name = "celery-rabbitmq"
    broker = AMQP

    def unavailable(self):
        if not reachable(AMQP, 5672):
            return f"RabbitMQ unreachable at {urlsplit(AMQP).hostname}:{urlsplit(AMQP).port or 5672}"
        return super().unavailable()


class CelerySluice(Celery):
    """Celery on Sluice's kombu transport, in a database of its own migrated with Sluice's schema;
    the same app, worker settings and result backend (Redis) as Celery on Redis and on RabbitMQ."""

    name = "celery-sluice"
    uses_database = True
    notes = "prefork -c 2; sluice+postgresql:// broker; no bulk call: delay() in a loop"

    def __init__(self, url):
        super().__init__(url)
        if url:
            self.env["BENCH_CELERY_BROKER"] = f"sluice+{url}"
            os.environ.update(self.env)

    def setup(self):
        migrate_sluice(self.url)
        super().setup()


class DjangoQ2Sluice(DjangoQ2):
    """django-q2 with Sluice's broker: the same Q_CLUSTER as its ORM broker's, broker_class added."""

    name = "django-q2-sluice"
    notes = "qcluster, Sluice broker (broker_class), workers 2; no bulk call: async_task() in a loop, one transaction"

    def setup(self):
        super().setup()
        from django_q.brokers import get_broker

        get_broker().prepare()  # its queue's topic, as Sluice's own row creates its queue before timing


def migrate_sluice(url):
    """Create Sluice's tables in the peer's database (a Sluice project's `manage.py migrate`)."""
    subprocess.run([sys.executable, str(ROOT / "manage.py"), "migrate", "--noinput", "-v0"], check=True, cwd=ROOT,
                   env={**os.environ, "DATABASE_URL": url, "DJANGO_SETTINGS_MODULE": "config.settings"})


PEERS = {p.name: p for p in (PgQueuer, Procrastinate, DjangoQ2, DjangoQ2Sluice, DjangoTasks, CeleryRedis,
                             CeleryRabbitMQ, CelerySluice)}


def measure(kind, admin, args):
    """The peer's row: single and bulk enqueue rates, then the drain of everything enqueued."""
    url = harness.create_database(admin, args.database) if kind.uses_database else None
    instance = kind(url)
    # The workers start in the environment as it is now (less the peer's unset), whatever the
    # enqueuing client sets in this process: Sluice's transport, connecting here, sets
    # DJANGO_SETTINGS_MODULE and DATABASE_URL.
    environment = {name: value for name, value in os.environ.items() if name not in kind.unset}
    try:
        instance.setup()
        row = {"system": kind.name, "results": kind.results, "notes": kind.notes}
        total = 0
        if args.singles:
            row["single_per_s"] = timed(args.singles, instance.single)
            total += args.singles
        row["bulk_per_s"] = timed(args.tasks, instance.bulk)
        total += args.tasks
        commands = instance.workers()
        with harness.Processes(args.logs) as workers:
            for name, command in commands:
                workers.start(name, command, instance.env, base=environment)
            row.update(harness.drain(instance.done(), total, args.drain_timeout, workers))
        return row
    finally:
        instance.cleanup()
        if url:
            harness.drop_databases(admin, [args.database])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("peer", choices=sorted(PEERS))
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--singles", type=int, default=300)
    parser.add_argument("--drain-timeout", type=float, default=30.0)
    parser.add_argument("--database", help="the database to create and drop (default sluice_bench_tasks_<peer>)")
    parser.add_argument("--logs", default=".", help="directory for the workers' logs")
    parser.add_argument("--json", required=True)
    args = parser.parse_args()
    admin = os.environ.get("DATABASE_URL") or sys.exit("task_peers.py: set DATABASE_URL to a PostgreSQL server")
    args.database = args.database or harness.peer_database(harness.BENCH_DB, args.peer)
    kind = PEERS[args.peer]
    reason = kind(None).unavailable()
    with harness.interrupted_by_sigterm():
        row = {"system": kind.name, "skipped": reason} if reason else measure(kind, admin, args)
    Path(args.json).write_text(json.dumps(row))


if __name__ == "__main__":
    main()
