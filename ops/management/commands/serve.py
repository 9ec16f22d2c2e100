"""manage.py serve: run the web server, a worker per registered group and per task queue, and every
background loop, restarting any that dies, until SIGTERM or Ctrl-C stops them all gracefully.

The web role is gunicorn (a pre-fork WSGI server: worker processes recycled when they die, graceful
shutdown on SIGTERM) on a socket serve binds itself before it starts anything: a bad address or a
port in use ends serve with one line, before a worker joins a group, and a restarted web child
listens on the same socket, so no other process can take the port between two starts.
"""
import signal
import socket
import subprocess
import sys
import threading
import time

from django.conf import settings
from django.core.management import call_command, get_commands
from django.core.management.base import CommandError

from queueing import loops, registry
from queueing.management.base import EngineCommand, positive
from scheduler import tasks

# Background loops other apps provide, started when their command exists: (command, arguments).
LOOPS = [
    ("relay", []),
    ("delayed", ["run"]),
    ("retention", ["run"]),
    ("halfmessages", ["checkback"]),
    ("scheduler", []),
    ("lagsampler", []),
]


class Child:
    def __init__(self, name, argv, pass_fds=()):
        self.name, self.argv, self.pass_fds = name, argv, pass_fds
        self.process = None
        self.restarts = 0
        self.started_at = 0.0

    def start(self):
        self.process = subprocess.Popen(self.argv, pass_fds=self.pass_fds)
        self.started_at = time.monotonic()


def parse_address(addr):
    """Return (host, port) of `HOST:PORT`, `[IPV6]:PORT` or `PORT`; raise CommandError otherwise."""
    host, sep, port = addr.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", addr
    host = host.removeprefix("[").removesuffix("]")
    if not port.isdigit() or not 1 <= int(port) <= 65535 or not host:
        raise CommandError(f"{addr!r} is not an address: give HOST:PORT, [IPV6]:PORT or PORT (1-65535)",
                           returncode=2)
    return host, int(port)


def listen(addr):
    """Return a listening socket on addr, inheritable by the web child; CommandError if it cannot be."""
    host, port = parse_address(addr)
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart while old connections linger
        try:
            sock.bind(address)
            sock.listen(2048)
        except OSError:
            sock.close()
            raise
    except OSError as error:  # socket.gaierror included: a host name that does not resolve
        raise CommandError(f"cannot listen on {addr}: {error.strerror or error}") from None
    sock.set_inheritable(True)
    return sock


class Command(EngineCommand):
    help = "Run everything in one supervised command: web server, workers, relay and schedulers."
    requires_system_checks = "__all__"  # it starts the web server and every worker: check them first

    def add_arguments(self, parser):
        parser.add_argument("addr", nargs="?", default="127.0.0.1:8000", help="web server address (host:port)")
        parser.add_argument("--workers", type=positive, default=1,
                            help="worker processes per registered group and per task queue")
        parser.add_argument("--web-workers", type=positive, default=2,
                            help="gunicorn worker processes of the web server (default 2)")
        parser.add_argument("--no-web", action="store_true")

    def handle(self, *args, addr, workers, web_workers, no_web, **options):
        manage = [sys.executable, sys.argv[0]]
        children = []
        if not no_web:
            listener = listen(addr)
            call_command("collectstatic", interactive=False, verbosity=0)
            children.append(Child("web", [
                sys.executable, "-m", "gunicorn", "config.wsgi:application", "--chdir", str(settings.BASE_DIR),
                "--bind", f"fd://{listener.fileno()}", "--workers", str(web_workers),
                "--graceful-timeout", "25", "--access-logfile", "-",
                # One serve per machine would otherwise fight over ~/.gunicorn/gunicorn.ctl.
                "--no-control-socket",
            ], pass_fds=(listener.fileno(),)))
            self.stdout.write(f"serve: web server (gunicorn) on http://{addr}/")
        for group in registry.groups():
            for n in range(workers):
                children.append(Child(f"worker {group} #{n + 1}", [*manage, "worker", "--group", group]))
        for queue in sorted({t.queue for t in tasks.registered().values()}):
            for n in range(workers):
                children.append(Child(f"task worker {queue} #{n + 1}", [*manage, "worker", "--queue", queue]))
        available = get_commands()
        for command, arguments in LOOPS:
            if command in available:
                children.append(Child(" ".join([command, *arguments]), [*manage, command, *arguments]))
        stop = threading.Event()
        with loops.on_stop(stop.set):
            for child in children:
                child.start()
                self.stdout.write(f"serve: started {child.name} (pid {child.process.pid})")
            try:
                while not stop.wait(1.0):
                    for child in children:
                        code = child.process.poll()
                        if code is None:
                            continue
                        # Back off a crash loop: at most one restart every 5 seconds per child.
                        if time.monotonic() - child.started_at < 5:
                            continue
                        child.restarts += 1
                        self.stderr.write(f"serve: {child.name} exited with {code}; restart #{child.restarts}")
                        child.start()
            finally:
                self.stdout.write("serve: stopping")
                for child in children:
                    if child.process.poll() is None:
                        child.process.send_signal(signal.SIGTERM)
                deadline = time.monotonic() + 30
                for child in children:
                    try:
                        child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
                    except subprocess.TimeoutExpired:
                        self.stderr.write(f"serve: {child.name} did not stop in time; killing it")
                        child.process.kill()
                self.stdout.write("serve: stopped")
