"""manage.py serve: run the web server, a worker per registered group and per task queue, and every
background loop, restarting any that dies, until SIGTERM or Ctrl-C stops them all gracefully."""
import signal
import subprocess
import sys
import threading
import time

from django.core.management import get_commands
from django.core.management.base import BaseCommand

from queueing import loops, registry
from scheduler import tasks

# Background loops other apps provide, started when their command exists: (command, arguments).
LOOPS = [
    ("relay", []),
    ("delayed", ["run"]),
    ("retention", ["run"]),
    ("halfmessages", ["checkback"]),
    ("scheduler", []),
]


class Child:
    def __init__(self, name, argv):
        self.name, self.argv = name, argv
        self.process = None
        self.restarts = 0
        self.started_at = 0.0

    def start(self):
        self.process = subprocess.Popen(self.argv)
        self.started_at = time.monotonic()


class Command(BaseCommand):
    help = "Run everything in one supervised command: web server, workers, relay and schedulers."

    def add_arguments(self, parser):
        parser.add_argument("addr", nargs="?", default="127.0.0.1:8000", help="web server address (host:port)")
        parser.add_argument("--workers", type=int, default=1,
                            help="worker processes per registered group and per task queue")
        parser.add_argument("--no-web", action="store_true")

    def handle(self, *args, addr, workers, no_web, **options):
        manage = [sys.executable, sys.argv[0]]
        children = []
        if not no_web:
            children.append(Child("web", [*manage, "runserver", "--noreload", addr]))
        for group in registry.groups():
            for n in range(max(1, workers)):
                children.append(Child(f"worker {group} #{n + 1}", [*manage, "worker", "--group", group]))
        for queue in sorted({t.queue for t in tasks.registered().values()}):
            for n in range(max(1, workers)):
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
