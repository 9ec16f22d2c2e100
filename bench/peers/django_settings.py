"""Django settings for the Django peers (django-q2 with its ORM broker, the django-tasks database
backend): BENCH_PEER names which, BENCH_PEER_DATABASE_URL the database."""
import os
from urllib.parse import urlsplit

_url = urlsplit(os.environ["BENCH_PEER_DATABASE_URL"])
SECRET_KEY = "bench"
DEBUG = False
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
DATABASES = {"default": {"ENGINE": "django.db.backends.postgresql", "NAME": _url.path.lstrip("/"),
                         "USER": _url.username or "", "PASSWORD": _url.password or "", "HOST": _url.hostname or "",
                         "PORT": _url.port or ""}}
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth"]
LOGGING = {"version": 1, "root": {"level": "WARNING"}}

if os.environ["BENCH_PEER"] in ("django-q2", "django-q2-sluice"):
    INSTALLED_APPS.append("django_q")
    # The ORM broker, two workers (processes); save_limit 0 keeps every result (the default keeps 250).
    Q_CLUSTER = {"name": "bench", "orm": "default", "workers": 2, "save_limit": 0, "timeout": 60, "retry": 120,
                "log_level": "WARNING"}
    if os.environ["BENCH_PEER"] == "django-q2-sluice":
        # The same cluster on Sluice's broker: the engine's apps and settings join (migrate makes
        # their tables in the peer's database).
        from config import settings as sluice_settings

        INSTALLED_APPS += ["django.contrib.postgres", "queueing", "scheduler", "scheduler.compat"]
        SLUICE = sluice_settings.SLUICE
        TASKS = sluice_settings.TASKS
        Q_CLUSTER = {**Q_CLUSTER, "broker_class": "scheduler.compat.djangoq_broker.Broker"}
else:
    INSTALLED_APPS.append("django_tasks_db")
    TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
