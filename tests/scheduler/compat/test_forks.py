"""A forked child forgets inherited connections without touching lazy objects it finds."""
import subprocess
import sys

from tests.conftest import ROOT

PROGRAM = """
import os, sys
sys.path.insert(0, {root!r})
os.environ.pop("DJANGO_SETTINGS_MODULE", None)
from django.conf import settings  # a program outside a Django project: settings never configured
from scheduler.compat import forks
forks._forget_inherited()
print("ok", settings.configured)
"""


def test_forgetting_connections_leaves_unconfigured_django_settings_alone():
    """Celery's prefork children of a program outside a Django project printed an ignored
    ImproperlyConfigured at every fork: the scan's isinstance() set up Django's lazy settings."""
    done = subprocess.run([sys.executable, "-c", PROGRAM.format(root=str(ROOT))], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ok", "False"], done.stdout + done.stderr
