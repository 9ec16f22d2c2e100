"""A machine without Redis or RabbitMQ: platform/ensure-services and the test run say so in one line
each and skip exactly the tests that need them. Exercised with addresses where nothing listens,
never by stopping this machine's services."""
import os
import re
import subprocess
import sys

from tests.conftest import ROOT

CLOSED = {"REDIS_URL": "redis://127.0.0.1:1/0", "AMQP_URL": "amqp://guest:guest@127.0.0.1:1//"}


def test_ensure_services_names_what_does_not_answer():
    env = {**os.environ, **CLOSED, "DATABASE_URL": "postgres://postgres@127.0.0.1:1/none"}
    result = subprocess.run([str(ROOT / "platform" / "ensure-services")], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    *lines, browser = result.stdout.splitlines()
    assert browser.startswith("services: chromium")  # the console's browser tests: installed, or why not
    assert lines == [
        "services: PostgreSQL from $DATABASE_URL does not answer at 127.0.0.1:1; "
        "without DATABASE_URL the tests use the embedded PostgreSQL",
        "services: Redis from $REDIS_URL does not answer at 127.0.0.1:1; the tests marked redis will be skipped",
        "services: RabbitMQ from $AMQP_URL does not answer at 127.0.0.1:1; "
        "the tests marked rabbitmq will be skipped",
    ]


def test_the_tests_that_need_a_missing_broker_are_skipped_and_said_so_first():
    env = {**os.environ, **CLOSED}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rs",
         "tests/outbox/test_brokers.py", "tests/outbox/test_inbox.py", "-m", "rabbitmq or redis"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    said = [n for n, line in enumerate(lines) if line.startswith("services: ")]
    assert [lines[n].split(" at ")[0] for n in said] == ["services: RabbitMQ does not answer",
                                                          "services: Redis does not answer"]
    assert "skipping the 7 test(s) marked rabbitmq" in lines[said[0]]
    assert "skipping the 3 test(s) marked redis" in lines[said[1]]
    first_result = next(n for n, line in enumerate(lines) if re.match(r"[.sFE]+ +\[", line))  # progress
    assert said[-1] < first_result  # before any test runs
    assert "10 skipped" in lines[-1] and "passed" not in lines[-1] and "failed" not in lines[-1]
