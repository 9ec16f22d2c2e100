"""Throttle counts live in PostgreSQL: several web processes share one count per credential, and
a window ends by its time (moved in SQL here, not waited for)."""
import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client

from api import keys, models

# Day-long windows: a test's requests all fall in one window unless it runs across midnight UTC.
OTHER_PROCESS = """
from django.test import RequestFactory
from api.throttling import LoginRate
request = RequestFactory().post("/admin/login/", REMOTE_ADDR="127.0.0.1")
print(sum(LoginRate().allow_request(request, None) for _ in range(3)))
"""


@pytest.mark.django_db(transaction=True)
def test_two_processes_share_the_login_count(manage, settings):
    settings.SLUICE_API = dict(settings.SLUICE_API, LOGIN_THROTTLE_RATE="5/day")
    other = manage("shell", "-c", OTHER_PROCESS, env={"SLUICE_LOGIN_THROTTLE_RATE": "5/day"})
    assert other.returncode == 0, other.stderr
    assert other.stdout.split()[-1] == "3"  # the child process's three attempts, all allowed
    client = Client()
    tries = [client.post("/admin/login/", {"username": "x", "password": "y"}).status_code for _ in range(3)]
    assert tries == [200, 200, 429]  # 3 + 2 = the 5 one address has, whichever process counted them
    assert list(models.ThrottleCount.objects.values_list("scope", "ident", "hits")) == [
        ("login", "address:127.0.0.1", 6)]


@pytest.mark.django_db(transaction=True)
def test_threads_on_their_own_connections_share_a_keys_count(live_server, settings):
    """Two clients at once against the live server (a thread, and a connection, per request)."""
    import concurrent.futures
    import urllib.error
    import urllib.request

    settings.SLUICE_API = dict(settings.SLUICE_API, THROTTLE_RATE="6/day")
    _, text = keys.create("svc", user=User.objects.create_user("svc"), scopes=["operate"])

    def get(_):
        request = urllib.request.Request(f"{live_server.url}/api/v1/topics/",
                                         headers={"Authorization": f"Bearer {text}"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        statuses = list(pool.map(get, range(10)))
    assert sorted(statuses) == [200] * 6 + [429] * 4
    assert models.ThrottleCount.objects.get(scope="api").hits == 10


def test_a_window_ends_and_ended_windows_are_pruned(db, settings):
    settings.SLUICE_API = dict(settings.SLUICE_API, THROTTLE_RATE="2/day")
    _, text = keys.create("svc", user=User.objects.create_user("svc"), scopes=["operate"])
    client = Client(headers={"Authorization": f"Bearer {text}"})
    assert [client.get("/api/v1/topics/").status_code for _ in range(2)] == [200, 200]
    refused = client.get("/api/v1/topics/")
    assert refused.status_code == 429 and 1 <= int(refused["Retry-After"]) <= 86400
    with connection.cursor() as cursor:  # the day is over
        cursor.execute("UPDATE api_throttlecount SET window_start = window_start - interval '1 day', "
                       "expires_at = expires_at - interval '1 day'")
    assert client.get("/api/v1/topics/").status_code == 200
    # The new window's first request pruned the ended one.
    assert list(models.ThrottleCount.objects.values_list("hits", flat=True)) == [1]


def test_credentials_are_counted_apart(db, settings):
    settings.SLUICE_API = dict(settings.SLUICE_API, THROTTLE_RATE="1/day")
    user = User.objects.create_user("svc")
    clients = [Client(headers={"Authorization": f"Bearer {keys.create(n, user=user, scopes=['operate'])[1]}"})
               for n in ("a", "b")]
    assert [c.get("/api/v1/topics/").status_code for c in clients] == [200, 200]
    assert [c.get("/api/v1/topics/").status_code for c in clients] == [429, 429]


def test_pruning_finds_ended_windows_by_their_index(db):
    """Plan guard: with many live windows, the prune reads the expires_at index, not the table."""
    import json

    from api.sql import queries

    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO api_throttlecount (scope, ident, window_start, hits, expires_at) "
                       "SELECT 'api', 'key:' || i, now(), 1, now() + interval '1 minute' "
                       "FROM generate_series(1, 20000) i")
        cursor.execute("ANALYZE api_throttlecount")
        cursor.execute("EXPLAIN (FORMAT JSON) " + queries["prune_counts"], {"limit": 100})
        plan = json.dumps(cursor.fetchone()[0])
    assert "Index" in plan and "expires_at" in plan and '"Seq Scan"' not in plan
