"""The Celery app of the bench: one app whatever the broker (BENCH_CELERY_BROKER), so Celery on Redis,
on RabbitMQ and (issue 12) on Sluice run the same tasks with the same worker settings. Results go to
Redis (BENCH_CELERY_RESULTS)."""
import os

from celery import Celery

if os.environ["BENCH_CELERY_BROKER"].startswith("sluice"):
    # kombu has no entry point for transports: Sluice's registers its alias when imported (a
    # Sluice project does it when Django loads its apps); `sluice+postgresql://` then sets Django up.
    import scheduler.compat.kombu_transport  # noqa: F401

app = Celery("bench", broker=os.environ["BENCH_CELERY_BROKER"], backend=os.environ["BENCH_CELERY_RESULTS"])
app.conf.update(task_default_queue="sluice_bench_tasks", broker_connection_retry_on_startup=True,
                worker_hijack_root_logger=False)


@app.task(name="noop")
def noop():
    """Nothing: its result (None, state SUCCESS) is stored in the result backend."""
