"""`manage.py serve` starts the roles, restarts none needlessly, and stops them all on SIGTERM."""
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import psutil
import pytest

from queueing import models, topics
from tests.conftest import ROOT
from tests.sampleapp import tasks as sample_tasks

pytestmark = [pytest.mark.acceptance, pytest.mark.django_db(transaction=True)]


def test_serve_runs_web_and_workers_and_stops_on_sigterm(process_env, manage, tmp_path):
    out = tmp_path / "handled.txt"
    env = {**process_env, "SLUICE_EXTRA_APPS": "tests.sampleapp", "SAMPLE_OUT": str(out),
           "SLUICE_POLL_FALLBACK_MS": "100"}
    topics.create_topic("sample.events", partitions=1)
    task = sample_tasks.add.enqueue(20, 22)
    serve = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "serve", "127.0.0.1:18765"],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        manage("produce", "sample.events", input="one\ntwo\n", env=env)
        deadline = time.monotonic() + 30
        page = None
        while time.monotonic() < deadline and (page is None or not out.exists() or
                                               len(out.read_text().splitlines()) < 2):
            try:
                page = urllib.request.urlopen("http://127.0.0.1:18765/", timeout=2).read().decode()
            except OSError:
                pass
            time.sleep(0.2)
        assert page and "Sluice" in page
        # gunicorn with WhiteNoise: the admin's styles are served with DEBUG off
        css = urllib.request.urlopen("http://127.0.0.1:18765/static/admin/css/base.css", timeout=5)
        assert css.status == 200 and css.headers["Content-Type"].startswith("text/css")
        console_css = urllib.request.urlopen("http://127.0.0.1:18765/static/console/console.css", timeout=5)
        assert console_css.status == 200
        assert urllib.request.urlopen("http://127.0.0.1:18765/readyz", timeout=5).read() == b"ok\n"
        assert sorted(line.split()[2] for line in out.read_text().splitlines()) == ["one", "two"]
        assert task.wait(timeout=30).return_value == 42
        serve.send_signal(signal.SIGTERM)
        stdout, stderr = serve.communicate(timeout=40)
    finally:
        serve.kill()
    assert serve.returncode == 0, stderr
    assert "started worker sample #1" in stdout and "serve: stopped" in stdout
    assert "started task worker sample #1" in stdout  # tests.sampleapp's tasks are in queue "sample"
    assert "started lagsampler (pid" in stdout  # the console's lag history
    assert "restart" not in stderr
    assert "[group sample] worker for group sample on sample.events starting" in stderr  # log lines name their group
    assert not models.GroupMember.objects.exists()  # the worker left its group on the way out


@pytest.mark.parametrize("addr, code, reason", [
    ("127.0.0.1:99999", 2, "'127.0.0.1:99999' is not an address: give HOST:PORT, [IPV6]:PORT or PORT (1-65535)"),
    ("no-such-host.invalid:8000", 1, "cannot listen on no-such-host.invalid:8000: "),
    ("IN_USE", 1, "Address already in use"),
])
def test_serve_with_an_address_it_cannot_listen_on_exits_with_one_line(process_env, addr, code, reason):
    """Regression: a port in use restarted the web child forever while a second set of workers
    joined the live groups. Now nothing starts, and one line says why: exit code 2 for an address
    that is wrong as written, 1 for one this machine cannot listen on now."""
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen()
    if addr == "IN_USE":
        addr = f"127.0.0.1:{held.getsockname()[1]}"
    env = {**process_env, "SLUICE_EXTRA_APPS": "tests.sampleapp"}
    try:
        result = subprocess.run([sys.executable, str(ROOT / "manage.py"), "serve", addr], env=env, cwd=ROOT,
                                capture_output=True, text=True, timeout=60)
    finally:
        held.close()
    assert result.returncode == code
    assert result.stdout == ""  # no child started
    [line] = result.stderr.splitlines()
    assert line.startswith("CommandError: ") and reason in line
    assert not models.GroupMember.objects.exists()


@pytest.mark.parametrize("args, reason", [
    (["--workers", "0"], "argument --workers: 0 must be at least 1 (see --help)"),
    (["--web-workers", "x"], "argument --web-workers: 'x' is not a whole number (see --help)"),
    (["--bogus"], "unrecognized arguments: --bogus (see --help)"),
])
def test_serve_with_wrong_arguments_starts_nothing_and_says_why_in_one_line(process_env, args, reason):
    result = subprocess.run([sys.executable, str(ROOT / "manage.py"), "serve", "127.0.0.1:0", *args], env=process_env,
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.endswith(reason), line


def test_a_web_server_killed_is_restarted_on_the_same_socket(process_env):
    """The address is bound once by serve: the restarted gunicorn gets the same socket, so nothing
    can take the port in between and the page answers again."""
    env = {**process_env, "SLUICE_EXTRA_APPS": "tests.sampleapp"}
    serve = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "serve", "127.0.0.1:18766", "--web-workers", "1"],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        web = None
        for _ in range(20):
            line = serve.stdout.readline()
            if line.startswith("serve: started web (pid "):
                web = int(line.split("pid ")[1].rstrip(")\n"))
                break
        assert web is not None
        assert wait_for_page("http://127.0.0.1:18766/healthz") == b"ok\n"
        os.kill(web, signal.SIGKILL)
        restarted = None
        deadline = time.monotonic() + 30
        while restarted is None and time.monotonic() < deadline:
            restarted = next((c.pid for c in psutil.Process(serve.pid).children()
                              if c.pid != web and "gunicorn" in " ".join(c.cmdline())), None)
            time.sleep(0.2)
        assert restarted is not None
        assert wait_for_page("http://127.0.0.1:18766/healthz") == b"ok\n"
        serve.send_signal(signal.SIGTERM)
        stdout, stderr = serve.communicate(timeout=40)
    finally:
        serve.kill()
    assert serve.returncode == 0, stderr
    assert f"serve: web exited with -{signal.SIGKILL.value}; restart #1" in stderr
    assert stderr.count("restart #") == 1  # the workers were left alone


def wait_for_page(url, seconds=30):
    """The body of url once it answers."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            return urllib.request.urlopen(url, timeout=2).read()
        except OSError:
            time.sleep(0.2)
    return None
