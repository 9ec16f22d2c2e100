"""The Celery app: Django's usual celery.py, with the broker and the result backend switched to Sluice
by one setting each."""
import os

import django
from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django.setup()  # loads the apps, and with them kombu's `sluice` alias

app = Celery("celeryapp")
app.conf.update(
    broker_url=os.environ.get("CELERY_BROKER_URL", "sluice://"),
    result_backend=os.environ.get("CELERY_RESULT_BACKEND", "sluice://"),
    broker_transport_options={"lock_duration_ms": int(os.environ.get("SLUICE_KOMBU_LOCK_MS", "30000"))},
    task_acks_late=os.environ.get("CELERY_ACKS_LATE") == "1",
    task_reject_on_worker_lost=os.environ.get("CELERY_REJECT_ON_WORKER_LOST") == "1",
    worker_prefetch_multiplier=1,
    include=["tests.celeryapp.tasks"],
    sluice_beat_lease_s=float(os.environ.get("SLUICE_BEAT_LEASE_S", "5")),
)
if os.environ.get("CELERY_BEAT_EVERY_S"):
    app.conf.beat_schedule = {
        "every-second": {"task": "tests.celeryapp.tasks.record", "args": ("beat",),
                         "schedule": float(os.environ["CELERY_BEAT_EVERY_S"])},
    }
