"""The rough edges a new user hits with the commands (EngineCommand): one line on stderr, exit code 2
for wrong input, 0 for ordinary events such as a closed pipe, and nothing changed."""
import signal
import subprocess
import sys
import time

import psycopg
import pytest
from django.db import connection

from queueing import groups, models, producer, retention, topics
from tests.conftest import ROOT, database_url

pytestmark = pytest.mark.django_db(transaction=True)


def start(process_env, *args, **kwargs):
    return subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), *args], env=process_env, cwd=ROOT,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs,
    )


def snapshot():
    """What a command that refuses must leave as it was."""
    return [m.objects.count() for m in (models.Topic, models.Record, models.ConsumerGroup, models.CommittedOffset,
                                        models.DelayedRecord)]


def one_line(result):
    """The stderr of a failed command: exactly one line, no traceback, no usage block."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr and "usage:" not in result.stderr
    return lines[0]


@pytest.mark.parametrize("args, message", [
    (("topics", "create", "x", "--partitions", "two"), "is not a whole number"),
    (("topics", "create", "x", "--partitions", "99999999999"), "must be at most 2147483647"),
    (("topics",), "required"),
    (("groups", "explode"), "invalid choice"),
    (("groups", "configure"), "required: group"),
    (("consume",), "required: topic"),
    (("produce", "t", "--batch-size", "0"), "must be at least 1"),
    (("reset_offsets",), "required"),
    (("reset_offsets", "--group", "g", "--all-topics", "--to-offset", "9223372036854775808"),
     "is past what an offset holds"),
    (("reset_offsets", "--group", "g", "--all-topics", "--shift-by", "-99999999999999999999999"),
     "is past what an offset holds"),
    (("delayed", "cancel", "x"), "is not a whole number"),
    (("replay", "t"), "one of the arguments --to-topic --to-original is required"),
    (("retention", "sometimes"), "invalid choice"),
    (("halfmessages", "list", "--limit", "0"), "must be at least 1"),
    (("relay", "--batch", "x"), "is not a whole number"),
    (("inbox", "prune", "--older-than"), "expected one argument"),
    (("tasks", "list", "--limit", "-1"), "must be at least 1"),
    (("schedules", "show"), "required: name"),
    (("scheduler", "--batch", "0"), "must be at least 1"),
    (("worker", "--max-poll-records", "x"), "is not a whole number"),
    (("worker", "--queue", "q", "--grace", "nan"), "must be a finite number"),
])
def test_argument_errors_are_one_line_without_the_usage_block(command, args, message):
    before = snapshot()
    result = command(*args)
    assert result.returncode == 2, (args, result.stderr)
    line = one_line(result)
    assert message in line and "--help" in line, line
    assert snapshot() == before


def test_groups_usage_lists_configure(manage):
    helped = manage("groups", "--help")
    assert helped.returncode == 0
    assert "{list,describe,delete,configure}" in helped.stdout


def test_produce_stores_the_bytes_of_lines_that_are_not_utf8(process_env):
    topics.create_topic("edge.bytes", partitions=1)
    result = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "produce", "edge.bytes", "--key-separator", ":"],
        input=b"\xff\xfe:\xfe\xff\nplain:text\n", capture_output=True, env=process_env, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    stored = [(bytes(r.key), bytes(r.value)) for r in models.Record.objects.order_by("offset")]
    assert stored == [(b"\xff\xfe", b"\xfe\xff"), (b"plain", b"text")]
    helped = subprocess.run([sys.executable, str(ROOT / "manage.py"), "produce", "--help"], capture_output=True,
                            text=True, env=process_env, cwd=ROOT)
    assert "stored exactly as read" in " ".join(helped.stdout.split())


def test_produce_json_refuses_bytes_that_are_not_utf8_with_the_line_number(process_env):
    topics.create_topic("edge.json", partitions=1)
    result = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "produce", "edge.json", "--json"],
        input=b'{"a": 1}\n"\xff"\n', capture_output=True, text=False, env=process_env, cwd=ROOT,
    )
    assert result.returncode == 2
    lines = result.stderr.decode().strip().splitlines()
    assert lines == ["CommandError: line 2: not UTF-8 text, which --json needs (nothing was produced)"]
    assert not models.Record.objects.exists()


def test_produce_json_with_a_key_separator_says_the_separator_is_missing(manage):
    topics.create_topic("edge.keyed", partitions=1)
    result = manage("produce", "edge.keyed", "--json", "--key-separator", ":", input='k:{"a": 1}\n{"b": 2}\n')
    assert result.returncode == 2
    assert one_line(result) == ("CommandError: line 2: no key separator ':' before the JSON value "
                                "(the whole line is one JSON document) (nothing was produced)")
    assert not models.Record.objects.exists()


def test_produce_says_how_much_was_sent_before_a_bad_line(manage):
    topics.create_topic("edge.part", partitions=1)
    result = manage("produce", "edge.part", "--json", "--batch-size", "2", input='1\n2\n3\nnope\n')
    assert result.returncode == 2
    assert "line 4: not JSON" in one_line(result) and "2 record(s) before it were produced" in result.stderr
    assert models.Record.objects.count() == 2


def test_produce_refuses_a_line_larger_than_the_topic_accepts(manage):
    topics.create_topic("edge.small", partitions=1, max_message_bytes=1024)
    result = manage("produce", "edge.small", input="x" * 5000 + "\n")
    assert result.returncode == 2
    assert "larger than topic 'edge.small' accepts" in one_line(result)
    assert not models.Record.objects.exists()


def test_produce_refuses_a_missing_topic_or_partition_before_reading_any_input(manage):
    """An empty input said "Produced 0 record(s) to nosuch." and exited 0."""
    topics.create_topic("edge.two", partitions=2)
    for args, message in [(("produce", "edge.nosuch"), "CommandError: Topic 'edge.nosuch' does not exist."),
                          (("produce", "edge.two", "--partition", "7"), "CommandError: Topic 'edge.two' has no partition 7."),
                          (("produce", "edge.two", "--partition", "-1"), "CommandError: Topic 'edge.two' has no partition -1.")]:
        result = manage(*args, input="")
        assert result.returncode == 2, (args, result.stderr)
        assert one_line(result) == message
    assert not models.Record.objects.exists()


def test_consume_into_a_closed_pipe_ends_quietly_and_leaves_no_group(process_env):
    """`consume TOPIC | head -1`: once the reader is gone, exit 0 without a traceback; the run's own
    console-consumer group is deleted."""
    topics.create_topic("edge.pipe", partitions=1)
    producer.send("edge.pipe", b"first")
    process = start(process_env, "consume", "edge.pipe", "--from-beginning", text=True)
    try:
        assert process.stdout.readline() == "first\n"
        process.stdout.close()  # what `head -1` does after its line
        for n in range(50):  # more records to print, into the closed pipe
            producer.send("edge.pipe", f"more {n}".encode())
            if process.poll() is not None:
                break
            time.sleep(0.2)
        stderr = process.stderr.read()
        assert process.wait(timeout=30) == 0, stderr
    finally:
        process.kill()
    assert "Traceback" not in stderr and "Error" not in stderr, stderr
    assert not models.ConsumerGroup.objects.filter(name__startswith="console-consumer-").exists()


def test_console_consumer_groups_expire_when_empty(manage):
    """A killed console consumer leaves its group behind; the retention pass deletes it once no
    member is alive, and keeps a console group that is in use."""
    topics.create_topic("edge.groups", partitions=1)
    consumed = manage("consume", "edge.groups", "--timeout-ms", "200")
    assert consumed.returncode == 0, consumed.stderr
    assert not models.ConsumerGroup.objects.filter(name__startswith="console-consumer-").exists()

    groups.join("console-consumer-dead", ["edge.groups"], member_id="killed", session_timeout_ms=1000)
    groups.join("console-consumer-live", ["edge.groups"], member_id="alive", session_timeout_ms=60_000)
    groups.join("named", ["edge.groups"], member_id="killed-too", session_timeout_ms=1000)
    models.GroupMember.objects.filter(id__in=["killed", "killed-too"]).update(
        last_heartbeat=groups.db_now() - __import__("datetime").timedelta(seconds=10)
    )
    assert retention.run_pass().groups_expired == 1
    remaining = set(models.ConsumerGroup.objects.values_list("name", flat=True))
    assert remaining == {"console-consumer-live", "named"}


def test_reset_offsets_positions_a_group_with_no_committed_offsets(manage):
    topics.create_topic("edge.reset", partitions=2)
    producer.send_batch("edge.reset", [b"a", b"b", b"c"], partition=0)
    dry = manage("reset_offsets", "--group", "newcomers", "--topic", "edge.reset", "--to-latest")
    assert dry.returncode == 0, dry.stderr
    assert [line.split() for line in dry.stdout.splitlines()[1:3]] == [
        ["newcomers", "edge.reset", "0", "-", "3"], ["newcomers", "edge.reset", "1", "-", "0"]]
    assert not models.ConsumerGroup.objects.filter(name="newcomers").exists()
    done = manage("reset_offsets", "--group", "newcomers", "--topic", "edge.reset:0", "--to-offset", "1", "--execute")
    assert done.returncode == 0, done.stderr
    committed = models.CommittedOffset.objects.filter(group__name="newcomers")
    assert dict(committed.values_list("partition", "offset")) == {0: 1}
    consumed = manage("consume", "edge.reset", "--group", "newcomers", "--max-messages", "2")
    assert consumed.stdout.splitlines() == ["b", "c"]

    nothing = manage("reset_offsets", "--group", "nobody", "--all-topics", "--to-earliest", "--execute")
    assert nothing.returncode == 2 and "the group has no topics" in one_line(nothing)
    assert not models.ConsumerGroup.objects.filter(name="nobody").exists()


@pytest.mark.parametrize("args", [
    ("reset_offsets", "--group", "g", "--topic", "edge.when", "--to-datetime", "2026-01-01T00:00:00", "--execute"),
    ("replay", "edge.when", "--to-topic", "edge.when", "--since", "2026-01-01"),
    ("delayed", "reschedule", "1", "--at", "2026-01-01T09:00"),
])
def test_a_moment_without_a_time_zone_is_refused(command, args):
    topics.create_topic("edge.when", partitions=1)
    before = snapshot()
    result = command(*args)
    assert result.returncode == 2
    assert "has no time zone: add Z for UTC or an offset" in one_line(result)
    assert snapshot() == before


def test_numbers_past_what_dates_hold_are_refused(command):
    topics.create_topic("edge.far", partitions=1)
    waiting = producer.send("edge.far", b"later", delay=60)
    due = models.DelayedRecord.objects.get().deliver_at
    for args, message in [
        (("delayed", "reschedule", str(waiting.id), "--delay", "nan"), "delay must be a positive number"),
        (("delayed", "reschedule", str(waiting.id), "--delay", "1e300"), "delay must be a positive number"),
        # The number given, not the timedelta made of it ("not datetime.timedelta(days=-1, ...)").
        (("delayed", "reschedule", str(waiting.id), "--delay", "-5"),
         "delay must be a positive number of seconds, not -5.0"),
        (("reset_offsets", "--group", "g", "--topic", "edge.far", "--by-duration", "P99999999999D", "--execute"),
         "'P99999999999D' is longer than a duration can be (999999999 days)"),
        (("reset_offsets", "--group", "g", "--topic", "edge.far", "--by-duration", "P99999999D", "--execute"),
         "a value is out of range"),
        (("worker", "--queue", ""), "a queue name is a non-empty string"),
    ]:
        before = snapshot()
        result = command(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert message in one_line(result), (args, result.stderr)
        assert snapshot() == before
    assert models.DelayedRecord.objects.get().deliver_at == due


def test_delayed_list_of_a_missing_topic_says_it_does_not_exist(manage):
    result = manage("delayed", "list", "--topic", "no.such")
    assert result.returncode == 2
    assert one_line(result) == "CommandError: Topic 'no.such' does not exist."


def test_an_interrupted_command_says_so_in_one_line(process_env):
    """Ctrl-C while produce waits for input: exit 130, one line, the batches sent stay sent."""
    topics.create_topic("edge.stop", partitions=1)
    process = start(process_env, "produce", "edge.stop", "--batch-size", "1", text=True)
    try:
        process.stdin.write("one\n")
        process.stdin.flush()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not models.Record.objects.exists():
            time.sleep(0.1)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    assert stderr.strip().splitlines() == [
        "CommandError: interrupted; what was done before the interruption stays done"]
    assert [bytes(r.value) for r in models.Record.objects.all()] == [b"one"]


def test_a_database_that_goes_away_mid_command_is_one_line(process_env):
    topics.create_topic("edge.gone", partitions=1)
    process = start(process_env, "produce", "edge.gone", "--batch-size", "1", text=True)
    try:
        process.stdin.write("one\n")
        process.stdin.flush()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not models.Record.objects.exists():
            time.sleep(0.1)
        with connection.cursor() as cursor:  # as a failover would: every other session of this database ends
            cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                           "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        _, stderr = process.communicate("two\n", timeout=30)
    finally:
        process.kill()
    assert process.returncode == 1, stderr
    assert len(stderr.strip().splitlines()) == 1 and "the database is unavailable" in stderr, stderr
    assert [bytes(r.value) for r in models.Record.objects.all()] == [b"one"]


def test_an_unreachable_database_is_one_line(manage):
    result = manage("topics", "list", env={"DATABASE_URL": "postgres://postgres@127.0.0.1:1/none"})
    assert result.returncode == 1
    assert "the database is unavailable: connection failed" in one_line(result)


@pytest.fixture
def unmigrated_url():
    """An empty database on the test server: what a new user has before `manage.py migrate`."""
    name = f"{connection.settings_dict['NAME']}_bare"[:63]
    admin = database_url("postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    yield database_url(name)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_every_command_on_an_unmigrated_database_says_to_migrate(manage, unmigrated_url):
    for args, stdin in [
        (("topics", "list"), None),
        (("topics", "create", "fresh"), None),
        (("produce", "fresh"), "x\n"),
        (("consume", "fresh", "--timeout-ms", "100"), None),
        (("groups", "list"), None),
        (("reset_offsets", "--group", "g", "--topic", "fresh", "--to-earliest"), None),
        (("delayed", "list"), None),
        (("replay", "fresh", "--to-topic", "other"), None),
        (("retention", "once"), None),
        (("halfmessages", "list"), None),
        (("relay", "--status"), None),
        # The long-running loops, which retry what fails: they refuse at once instead.
        (("relay",), None),
        (("scheduler",), None),
        (("lagsampler",), None),
        (("shop_traffic", "--orders", "1", "--watch", "0"), None),
        (("apikeys", "list"), None),
        (("inbox", "prune"), None),
        (("tasks", "list"), None),
        (("schedules", "list"), None),
    ]:
        result = manage(*args, input=stdin, env={"DATABASE_URL": unmigrated_url}, timeout=30)
        assert result.returncode == 2, (args, result.stderr)
        assert "run `manage.py migrate` (or `make run`) first" in one_line(result), (args, result.stderr)
        assert result.stdout == "", (args, result.stdout)  # no table header before the error
    with psycopg.connect(unmigrated_url) as conn:
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()[0]
    assert tables == 0
