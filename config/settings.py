"""Django settings for Sluice, read from the environment (12-factor)."""
import json
import os
from pathlib import Path

from config import database

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name, default=False):
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


DEBUG = env_bool("SLUICE_DEBUG", False)
SECRET_KEY = os.environ.get("SECRET_KEY") or ("insecure-dev-key-set-SECRET_KEY-in-production" if DEBUG else None)
if SECRET_KEY is None:
    # A stable per-checkout key so sessions survive restarts of `make run` without configuration.
    key_file = BASE_DIR / "var" / "secret_key"
    if not key_file.exists():
        import secrets

        key_file.parent.mkdir(parents=True, exist_ok=True)
        key_file.write_text(secrets.token_urlsafe(50))
        key_file.chmod(0o600)
    SECRET_KEY = key_file.read_text().strip()

ALLOWED_HOSTS = [h for h in os.environ.get("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]").split(",") if h]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    # Before queueing: its `worker` command extends the engine's with --queue (the first app that
    # provides a command wins, as staticfiles' runserver does over Django's).
    "scheduler",
    "scheduler.compat",
    "queueing",
    "rest_framework",
    "drf_spectacular",
    "outbox",
    "api",
    "shop",
    "ops",
    "console",
    # django-q2's tables (tasks, results, schedules); its cluster runs on Sluice (Q_CLUSTER below).
    "django_q",
]
# Extra apps (for example the one holding your handlers), comma-separated.
INSTALLED_APPS += [app for app in os.environ.get("SLUICE_EXTRA_APPS", "").split(",") if app]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Static files (the admin's styles) served by the project itself, compressed and cached, under
    # any WSGI server: right after SecurityMiddleware, as WhiteNoise asks.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "api.middleware.Deprecation",
    "api.middleware.LoginThrottle",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": database.parse_url(database.database_url())}
DATABASES["default"]["CONN_MAX_AGE"] = int(os.environ.get("SLUICE_CONN_MAX_AGE", "60"))
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DATABASES["default"]["OPTIONS"].setdefault("application_name", os.environ.get("SLUICE_APP_NAME", "sluice"))
DATABASES["default"]["TEST"] = {"NAME": os.environ.get("SLUICE_TEST_DATABASE", "test_sluice")}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"  # filled by collectstatic, which `manage.py serve` runs first
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    # Gzip and Brotli copies at collectstatic; no manifest, so an uncollected checkout still renders.
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Until collectstatic has run (tests, a fresh checkout), files are found in the apps; once it has
# (`serve` runs it first), the collected, compressed copies are served.
WHITENOISE_USE_FINDERS = not STATIC_ROOT.is_dir()

# Production behind a TLS-terminating proxy (docs/production.md): SLUICE_HTTPS=1 turns on what
# `manage.py check --deploy` asks for. The probes stay reachable over plain HTTP inside the network.
if env_bool("SLUICE_HTTPS", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = True
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = int(os.environ.get("SLUICE_HSTS_SECONDS", str(365 * 24 * 3600)))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SLUICE_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env_bool("SLUICE_HSTS_PRELOAD", True)
CSRF_TRUSTED_ORIGINS = [o for o in os.environ.get("CSRF_TRUSTED_ORIGINS", "").split(",") if o]
LOGIN_URL = "admin:login"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    # %(role)s: "[group billing] " in a worker process, so the lines of `serve`'s workers say whose they are.
    "filters": {"role": {"()": "queueing.roles.RoleFilter"}},
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(role)s%(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["role"]}},
    "loggers": {
        "sluice": {"handlers": ["console"], "level": os.environ.get("SLUICE_LOG_LEVEL", "INFO"), "propagate": False},
        # Django's own receivers of task_started and task_finished: a worker logs each Django task it
        # runs (a failure at ERROR, with its traceback).
        "django.tasks": {"handlers": ["console"], "level": os.environ.get("SLUICE_LOG_LEVEL", "INFO"),
                         "propagate": False},
    },
}

REST_FRAMEWORK = {
    # API keys first: an anonymous request then gets 401 with a WWW-Authenticate header. Sessions
    # (with CSRF) serve the browsable pages.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "api.authentication.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["api.parsers.JSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer",
                                 "rest_framework.renderers.BrowsableAPIRenderer"],
    "DEFAULT_THROTTLE_CLASSES": ["api.throttling.PerCredential"],
    "EXCEPTION_HANDLER": "api.errors.handle",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Sluice", "DESCRIPTION": "Topics, records and half messages. Every error is application/problem+json.",
    "VERSION": "1.0.0",
    "PREPROCESSING_HOOKS": ["api.schema.only_v1"],
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "api.schema.add_problems"],
    # The reference pages' assets, served by api/reference.py from drf-spectacular-sidecar.
    "SWAGGER_UI_DIST": "/api/v1/reference/assets/swagger-ui-dist",
    "SWAGGER_UI_FAVICON_HREF": "/api/v1/reference/assets/swagger-ui-dist/favicon-32x32.png",
    "REDOC_DIST": "/api/v1/reference/assets/redoc",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
}
# The REST API (api/): the largest request body it reads (413 beyond); requests per credential (or
# per client address when anonymous) in DRF's rate form "N/second|minute|hour|day", empty for none;
# how long an Idempotency-Key's response is remembered.
SLUICE_API = {
    "IDEMPOTENCY_TTL_S": int(os.environ.get("SLUICE_API_IDEMPOTENCY_TTL_S", str(24 * 3600))),
    "MAX_BODY_BYTES": int(os.environ.get("SLUICE_API_MAX_BODY_BYTES", str(4 * 1024 * 1024))),
    "THROTTLE_RATE": os.environ.get("SLUICE_API_THROTTLE_RATE", "1200/minute"),
    # Sign-in attempts per client address on the login forms (the admin's and the console's).
    "LOGIN_PATHS": ["/admin/login/", "/console/login/"],
    "LOGIN_THROTTLE_RATE": os.environ.get("SLUICE_LOGIN_THROTTLE_RATE", "10/minute"),
}
DATA_UPLOAD_MAX_MEMORY_SIZE = 4 * 1024 * 1024

# Django's tasks framework (django.tasks) runs on Sluice: a Django task is a Sluice task, run by
# `manage.py worker --queue <queue_name>`. QUEUES empty: any queue name.
TASKS = {"default": {"BACKEND": "scheduler.backends.SluiceBackend", "QUEUES": []}}

# django-q2 on Sluice (scheduler/compat/djangoq_broker.py): `manage.py qcluster` takes the tasks of
# async_task() from the topic djangoq.<name>. retry: seconds a task is locked for its worker before
# it is delivered again (keep timeout below it, as django-q2 asks).
Q_CLUSTER = {
    "name": os.environ.get("SLUICE_DJANGO_Q_NAME", "sluice"),
    "broker_class": "scheduler.compat.djangoq_broker.Broker",
    "workers": int(os.environ.get("SLUICE_DJANGO_Q_WORKERS", "2")),
    "timeout": int(os.environ.get("SLUICE_DJANGO_Q_TIMEOUT_S", "60")),
    "retry": int(os.environ.get("SLUICE_DJANGO_Q_RETRY_S", "120")),
    "bulk": int(os.environ.get("SLUICE_DJANGO_Q_BULK", "10")),
    "poll": float(os.environ.get("SLUICE_DJANGO_Q_POLL_S", "1")),
}

# The operators' console: how often the lag sampler runs and how long its history is kept.
SLUICE_CONSOLE = {
    "LAG_SAMPLE_S": float(os.environ.get("SLUICE_CONSOLE_LAG_SAMPLE_S", "15")),
    "LAG_RETENTION_S": int(os.environ.get("SLUICE_CONSOLE_LAG_RETENTION_S", str(24 * 3600))),
}

# Engine defaults; each can be overridden per topic or per consumer.
SLUICE = {
    "DEFAULT_PARTITIONS": int(os.environ.get("SLUICE_DEFAULT_PARTITIONS", "1")),
    "MAX_MESSAGE_BYTES": int(os.environ.get("SLUICE_MAX_MESSAGE_BYTES", str(1024 * 1024))),
    "SESSION_TIMEOUT_MS": int(os.environ.get("SLUICE_SESSION_TIMEOUT_MS", "10000")),
    "HEARTBEAT_INTERVAL_MS": int(os.environ.get("SLUICE_HEARTBEAT_INTERVAL_MS", "3000")),
    "POLL_FALLBACK_MS": int(os.environ.get("SLUICE_POLL_FALLBACK_MS", "1000")),
    # Prepare the hot-path queries once per connection; turn off behind a transaction-mode pooler.
    "PREPARED_STATEMENTS": env_bool("SLUICE_PREPARED_STATEMENTS", True),
    # Retries: a group's or topic's own policy wins over these.
    "DELIVERY_LIMIT": int(os.environ.get("SLUICE_DELIVERY_LIMIT", "5")),
    "BACKOFF_BASE_MS": int(os.environ.get("SLUICE_BACKOFF_BASE_MS", "1000")),
    "BACKOFF_MAX_MS": int(os.environ.get("SLUICE_BACKOFF_MAX_MS", "600000")),
    "LOCK_DURATION_MS": int(os.environ.get("SLUICE_LOCK_DURATION_MS", "30000")),
    # Retention: the log is cut in time segments that a retention pass drops whole.
    "SEGMENT_MS": int(os.environ.get("SLUICE_SEGMENT_MS", str(24 * 3600 * 1000))),
    "RETENTION_CHECK_MS": int(os.environ.get("SLUICE_RETENTION_CHECK_MS", "60000")),
    "RETENTION_LOCK_TIMEOUT_MS": int(os.environ.get("SLUICE_RETENTION_LOCK_TIMEOUT_MS", "200")),
    "TOMBSTONE_RETENTION_MS": int(os.environ.get("SLUICE_TOMBSTONE_RETENTION_MS", str(24 * 3600 * 1000))),
    # Tasks (scheduler/): partitions of a queue's topic when it is created (a worker acquires on one
    # partition at a time, so two let two workers acquire together); how long finished tasks
    # (results, errors, attempts) are kept.
    "TASK_PARTITIONS": int(os.environ.get("SLUICE_TASK_PARTITIONS", "2")),
    # Retention of a task queue's topic when it is created: a record not settled by then is lost.
    "TASK_TOPIC_RETENTION_MS": int(os.environ.get("SLUICE_TASK_TOPIC_RETENTION_MS", str(30 * 24 * 3600 * 1000))),
    "TASK_RESULT_TTL_S": int(os.environ.get("SLUICE_TASK_RESULT_TTL_S", str(7 * 24 * 3600))),
    # A task whose runs were lost with their worker (killed) more often than this fails.
    "TASK_MAX_LOST": int(os.environ.get("SLUICE_TASK_MAX_LOST", "3")),
}

# The example shop (shop/): an order still unpaid SHOP_UNPAID_ORDER_TIMEOUT_S seconds after it was
# placed is cancelled by a countdown task (`make run` sets 60); coupons are valid
# SHOP_COUPON_VALID_DAYS, and a nightly job in SHOP_TIME_ZONE expires the unused ones.
SHOP = {
    "UNPAID_ORDER_TIMEOUT_S": int(os.environ.get("SHOP_UNPAID_ORDER_TIMEOUT_S", str(30 * 60))),
    "COUPON_VALID_DAYS": int(os.environ.get("SHOP_COUPON_VALID_DAYS", "30")),
    "TIME_ZONE": os.environ.get("SHOP_TIME_ZONE", "Europe/Paris"),
}

# Transactional messaging (outbox/). Named destinations keep broker URLs and credentials out of the
# outbox table: {"billing": "amqp://user:pass@host:5672/vhost?exchange=billing"}; an event then names
# "billing". A JSON object in the environment, or set it here.
SLUICE_OUTBOX_DESTINATIONS = json.loads(os.environ.get("SLUICE_OUTBOX_DESTINATIONS", "{}"))
# Where half messages' HTTP check-back callbacks may go (outbox/callbacks.py): host names, ".domain"
# suffixes and IP networks, comma-separated. Empty: no callback_url is accepted. A private, loopback or
# link-local address is reached only when a network listed here holds it.
SLUICE_HALF_CALLBACK_ALLOW = [h.strip() for h in os.environ.get("SLUICE_HALF_CALLBACK_ALLOW", "").split(",") if h.strip()]
SLUICE_OUTBOX_SOURCE = os.environ.get("SLUICE_OUTBOX_SOURCE", "/sluice")  # CloudEvents source prefix
SLUICE_OUTBOX_PRUNE_AFTER = os.environ.get("SLUICE_OUTBOX_PRUNE_AFTER", "7d")  # delivered events; 0 keeps
SLUICE_INBOX_RETENTION = os.environ.get("SLUICE_INBOX_RETENTION", "7d")  # dedup entries; 0 keeps
SLUICE_OUTBOX_BACKOFF_MS = (
    int(os.environ.get("SLUICE_OUTBOX_BACKOFF_BASE_MS", "500")),
    int(os.environ.get("SLUICE_OUTBOX_BACKOFF_MAX_MS", "60000")),
)

# /metrics answers only requests bearing this token when it is set (Prometheus' `authorization`).
SLUICE_METRICS_TOKEN = os.environ.get("SLUICE_METRICS_TOKEN", "")
