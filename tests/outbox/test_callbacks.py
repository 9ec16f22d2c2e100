"""Half messages' HTTP callbacks cannot be turned against the platform's own network (SSRF)."""
import http.server
import json
import threading

import pytest
from django.db import connection

from outbox import half, models
from queueing import topics
from queueing import exceptions as queueing_exceptions


class Recorder(http.server.BaseHTTPRequestHandler):
    """Answers commit, or redirects when the path says so; remembers every request it got."""

    seen = []

    def do_POST(self):
        Recorder.seen.append((self.server.server_address[1], self.path))
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.startswith("/redirect"):
            self.send_response(302)
            self.send_header("Location", self.path.split("to=", 1)[1])
            self.end_headers()
            return
        payload = json.dumps({"status": "commit"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def servers():
    """Two local HTTP servers: (port of the callback target, port of a second one)."""
    started = []
    for _ in range(2):
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        started.append(server)
    Recorder.seen = []
    yield [server.server_address[1] for server in started]
    for server in started:
        server.shutdown()


@pytest.fixture
def topic(db):
    return topics.create_topic("payments")


def check_now(message):
    with connection.cursor() as cursor:
        cursor.execute("UPDATE outbox_halfmessage SET next_check_at = now() - interval '1 second' WHERE id = %s",
                       [message.id])
    half.CheckBack().run_once()
    return half.status(message.id)


@pytest.mark.parametrize("url", [
    "http://169.254.169.254/latest/meta-data/",     # the cloud metadata address
    "http://[fd00:ec2::254]/latest/meta-data/",
    "http://127.0.0.1:9/check",
    "http://localhost/check",
    "https://payments.example/check",
])
def test_with_an_empty_allow_list_no_callback_is_accepted(topic, settings, url):
    settings.SLUICE_HALF_CALLBACK_ALLOW = []
    with pytest.raises(queueing_exceptions.InvalidArgument, match="not in SLUICE_HALF_CALLBACK_ALLOW"):
        half.prepare("payments", b"v", producer_group="svc", callback_url=url)
    assert not models.HalfMessage.objects.exists()


def test_an_allowed_name_does_not_admit_the_metadata_address(topic, settings):
    settings.SLUICE_HALF_CALLBACK_ALLOW = ["payments.example", ".internal.example", "10.0.0.0/8"]
    for url in ("http://169.254.169.254/", "http://metadata.google.internal/", "http://192.168.1.1/"):
        with pytest.raises(queueing_exceptions.InvalidArgument):
            half.prepare("payments", b"v", producer_group="svc", callback_url=url)
    for url in ("https://payments.example/c", "https://a.internal.example/c", "http://10.1.2.3:8080/c"):
        half.prepare("payments", b"v", producer_group="svc", callback_url=url)
    assert models.HalfMessage.objects.count() == 3


def test_a_loopback_address_is_reached_only_when_its_network_is_allowed(topic, settings, servers):
    port = servers[0]
    settings.SLUICE_HALF_CALLBACK_ALLOW = ["localhost"]  # the name, not its loopback network
    message = half.prepare("payments", b"v", producer_group="svc", callback_url=f"http://localhost:{port}/check")
    checked = check_now(message)
    assert checked.state == "prepared" and Recorder.seen == []
    assert "refused" in checked.checks.get().detail and "not a public address" in checked.checks.get().detail
    settings.SLUICE_HALF_CALLBACK_ALLOW = ["localhost", "127.0.0.0/8", "::1"]
    assert check_now(message).state == "committed"
    assert Recorder.seen == [(port, "/check")]


def test_redirects_are_not_followed(topic, settings, servers):
    target, other = servers
    settings.SLUICE_HALF_CALLBACK_ALLOW = ["127.0.0.1"]
    url = f"http://127.0.0.1:{target}/redirect?to=http://127.0.0.1:{other}/elsewhere"
    checked = check_now(half.prepare("payments", b"v", producer_group="svc", callback_url=url))
    assert checked.state == "prepared"
    assert "HTTP 302" in checked.checks.get().detail and "redirects are not followed" in checked.checks.get().detail
    assert [port for port, _ in Recorder.seen] == [target]


def test_proxy_variables_are_ignored(topic, settings, servers, monkeypatch):
    target, proxy = servers
    settings.SLUICE_HALF_CALLBACK_ALLOW = ["127.0.0.1"]
    for variable in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.setenv(variable, f"http://127.0.0.1:{proxy}")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    message = half.prepare("payments", b"v", producer_group="svc", callback_url=f"http://127.0.0.1:{target}/c")
    assert check_now(message).state == "committed"
    assert Recorder.seen == [(target, "/c")]


def test_checker_and_callback_url_exclude_each_other_and_a_checker_must_be_registered(topic, settings):
    settings.SLUICE_HALF_CALLBACK_ALLOW = ["payments.example"]
    half.checker("tests.callbacks")(lambda message: "commit")
    with pytest.raises(queueing_exceptions.InvalidArgument, match="one of them"):
        half.prepare("payments", b"v", producer_group="svc", checker="tests.callbacks",
                     callback_url="https://payments.example/c")
    with pytest.raises(queueing_exceptions.InvalidArgument, match="no checker named 'tests.nobody'"):
        half.prepare("payments", b"v", producer_group="svc", checker="tests.nobody")
    assert not models.HalfMessage.objects.exists()
    half.prepare("payments", b"v", producer_group="svc", checker="tests.callbacks")
