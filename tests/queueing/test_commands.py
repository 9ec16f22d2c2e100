"""Every command as a new user would run it, wrong arguments included (exit code 2, nothing changed)."""
import signal
import subprocess
import sys
import time

import pytest

from queueing import groups, models, topics
from tests.conftest import ROOT

pytestmark = pytest.mark.django_db(transaction=True)


def test_topics_command(manage, command):
    created = manage("topics", "create", "cmd.orders", "--partitions", "3", "--retention-ms", "60000")
    assert created.returncode == 0, created.stderr
    assert "Created topic cmd.orders with 3 partition(s)." in created.stdout
    assert "cmd.orders" in manage("topics", "list").stdout.split()
    described = manage("topics", "describe", "cmd.orders").stdout
    assert "PartitionCount: 3" in described and "RetentionMs: 60000" in described
    assert "LOG-END-OFFSET" in described
    assert manage("topics", "alter", "cmd.orders", "--partitions", "5").returncode == 0
    assert topics.get_topic("cmd.orders").partition_count == 5

    for args, message in [
        (("topics", "create", "bad name"), "Invalid topic name"),
        (("topics", "create", "cmd.orders"), "already exists"),
        (("topics", "create", "x", "--partitions", "0"), "must be at least 1"),
        (("topics", "create", "x", "--partitions", "two"), "is not a whole number"),
        (("topics", "alter", "cmd.orders", "--partitions", "2"), "can only grow"),
        (("topics", "alter", "cmd.orders"), "nothing to change"),
        (("topics", "describe", "missing"), "does not exist"),
        (("topics", "delete", "missing"), "does not exist"),
        (("topics", "frobnicate"), "invalid choice"),
        (("topics",), "required"),
    ]:
        result = command(*args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert message in result.stderr, (args, result.stderr)
    assert not models.Topic.objects.filter(name__in=["bad name", "x", "missing"]).exists()
    assert topics.get_topic("cmd.orders").partition_count == 5

    refused = manage("topics", "delete", "cmd.orders", input="")  # no terminal to confirm on
    assert refused.returncode == 2 and "add --yes" in refused.stderr, refused.stderr
    assert models.Topic.objects.filter(name="cmd.orders").exists()
    deleted = manage("topics", "delete", "cmd.orders", "--yes", input="")
    assert deleted.returncode == 0, deleted.stderr
    assert not models.Topic.objects.filter(name="cmd.orders").exists()


def test_produce_and_consume_commands(manage, command):
    topics.create_topic("cmd.lines", partitions=2)
    produced = manage("produce", "cmd.lines", "--key-separator", ":", input="k1:one\nk2:two\nk1:three\n")
    assert produced.returncode == 0, produced.stderr
    assert "Produced 3 record(s) to cmd.lines." in produced.stderr
    consumed = manage(
        "consume", "cmd.lines", "--group", "readers", "--from-beginning", "--max-messages", "3", "--print-key"
    )
    assert consumed.returncode == 0, consumed.stderr
    lines = consumed.stdout.splitlines()
    assert sorted(lines) == ["k1\tone", "k1\tthree", "k2\ttwo"]
    assert lines.index("k1\tone") < lines.index("k1\tthree")  # per-key order
    assert "Processed a total of 3 message(s)" in consumed.stderr
    # The group committed what it printed: nothing is left for it.
    again = manage("consume", "cmd.lines", "--group", "readers", "--timeout-ms", "500")
    assert again.returncode == 0 and again.stdout == ""
    json_ok = manage("produce", "cmd.lines", "--json", "--header", "source=test", input='{"a": 1}\n')
    assert json_ok.returncode == 0, json_ok.stderr

    before = models.Record.objects.count()
    for args, stdin, message in [
        (("produce", "missing"), "x\n", "does not exist"),
        (("produce", "cmd.lines", "--json"), "{not json\n", "line 1: not JSON"),
        (("produce", "cmd.lines", "--key-separator", ":"), "no-separator\n", "no key separator"),
        (("produce", "cmd.lines", "--header", "novalue"), "x\n", "expected NAME=VALUE"),
        (("produce", "cmd.lines", "--partition", "9"), "x\n", "has no partition 9"),
        (("produce", "cmd.lines", "--key", "a", "--key-separator", ":"), "x\n", "not both"),
        (("consume", "missing", "--group", "g", "--timeout-ms", "100"), None, "does not exist"),
        (("consume", "cmd.lines", "--max-messages", "0"), None, "must be at least 1"),
    ]:
        result = command(*args, input=stdin)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr, (args, result.stderr)
    assert models.Record.objects.count() == before


def test_groups_command(manage, command):
    topics.create_topic("cmd.g", partitions=2)
    manage("produce", "cmd.g", "--partition", "0", input="a\nb\nc\n")
    manage("consume", "cmd.g", "--group", "lagging", "--from-beginning", "--max-messages", "1")
    listed = manage("groups", "list")
    assert listed.returncode == 0 and "lagging" in listed.stdout
    described = manage("groups", "describe", "lagging")
    assert described.returncode == 0, described.stderr
    row = [line.split() for line in described.stdout.splitlines() if line.startswith("lagging")]
    assert row == [["lagging", "cmd.g", "0", "1", "3", "2", "-", "-", "-"]]
    for args, message in [
        (("groups", "describe", "nobody"), "does not exist"),
        (("groups", "describe", "lagging", "--members", "--resets"), "not allowed with argument --members"),
        (("groups", "delete", "nobody"), "does not exist"),
        (("groups", "explode"), "invalid choice"),
    ]:
        result = command(*args)
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr)
    assert manage("groups", "delete", "lagging").returncode == 0
    assert not models.ConsumerGroup.objects.filter(name="lagging").exists()


def test_reset_offsets_command(manage, command, tmp_path):
    topics.create_topic("cmd.r", partitions=2)
    manage("produce", "cmd.r", "--partition", "0", input="a\nb\nc\nd\n")
    manage("produce", "cmd.r", "--partition", "1", input="e\nf\n")
    manage("consume", "cmd.r", "--group", "rg", "--from-beginning", "--max-messages", "6")

    def committed():
        return dict(models.CommittedOffset.objects.filter(group__name="rg").values_list("partition", "offset"))

    assert committed() == {0: 4, 1: 2}
    dry = manage("reset_offsets", "--group", "rg", "--topic", "cmd.r", "--to-earliest")
    assert dry.returncode == 0, dry.stderr
    assert "Dry run: nothing changed" in dry.stdout
    assert [line.split() for line in dry.stdout.splitlines()[1:3]] == [["rg", "cmd.r", "0", "4", "0"], ["rg", "cmd.r", "1", "2", "0"]]
    assert committed() == {0: 4, 1: 2}

    cases = [
        (("--topic", "cmd.r:0", "--to-offset", "1"), {0: 1, 1: 2}),
        (("--topic", "cmd.r", "--shift-by", "1"), {0: 2, 1: 2}),  # clamped to the log end
        (("--all-topics", "--to-latest"), {0: 4, 1: 2}),
        (("--all-topics", "--shift-by", "-10"), {0: 0, 1: 0}),  # clamped to the log start
        (("--topic", "cmd.r", "--to-datetime", "2000-01-01T00:00:00Z"), {0: 0, 1: 0}),
        (("--topic", "cmd.r", "--by-duration", "PT0S"), {0: 4, 1: 2}),
        (("--topic", "cmd.r", "--by-duration", "P1D"), {0: 0, 1: 0}),
        (("--topic", "cmd.r", "--to-current"), {0: 0, 1: 0}),
    ]
    for args, expected in cases:
        result = command("reset_offsets", "--group", "rg", *args, "--execute")
        assert result.returncode == 0, (args, result.stderr)
        assert committed() == expected, args
    plan = tmp_path / "plan.csv"
    plan.write_text("cmd.r,0,3\ncmd.r,1,1\n")
    assert command("reset_offsets", "--group", "rg", "--from-file", str(plan), "--execute").returncode == 0
    assert committed() == {0: 3, 1: 1}
    audited = 1 + 2 * (len(cases) - 1) + 2  # the first case resets one partition, the rest two
    assert models.OffsetReset.objects.count() == audited

    bad_file = tmp_path / "bad.csv"
    bad_file.write_text("cmd.r,zero,1\n")
    for args, message in [
        (("--group", "rg", "--topic", "cmd.r"), "choose one of"),
        (("--group", "rg", "--to-earliest"), "one of the arguments --topic --all-topics --from-file is required"),
        (("--group", "rg", "--topic", "missing", "--to-earliest"), "does not exist"),
        (("--group", "rg", "--topic", "cmd.r:7", "--to-earliest"), "has no partition 7"),
        (("--group", "rg", "--topic", "cmd.r:x", "--to-earliest"), "partitions must be numbers"),
        (("--group", "rg", "--topic", "cmd.r", "--to-datetime", "yesterday"), "not an ISO-8601"),
        (("--group", "rg", "--topic", "cmd.r", "--by-duration", "1h"), "not a duration"),
        (("--group", "rg", "--topic", "cmd.r", "--to-offset", "-1"), "must be 0 or more"),
        (("--group", "rg", "--topic", "cmd.r", "--to-earliest", "--to-latest"), "not allowed with"),
        (("--group", "rg", "--from-file", str(bad_file)), "must be numbers"),
        (("--group", "rg", "--from-file", str(tmp_path / "none.csv")), "no such file"),
    ]:
        result = command("reset_offsets", *args, "--execute")
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert message in result.stderr, (args, result.stderr)
    assert committed() == {0: 3, 1: 1}
    assert models.OffsetReset.objects.count() == audited


def test_worker_command_runs_handlers_and_stops_on_sigterm(process_env, manage, tmp_path):
    out = tmp_path / "handled.txt"
    env = {**process_env, "SLUICE_EXTRA_APPS": "tests.sampleapp", "SAMPLE_OUT": str(out), "SLUICE_POLL_FALLBACK_MS": "100"}
    unknown = manage("worker", "--group", "nobody", env=env)
    assert unknown.returncode == 2 and "no handlers are registered for group 'nobody'" in unknown.stderr
    assert manage("worker").returncode == 2
    topics.create_topic("sample.events", partitions=2)
    manage("produce", "sample.events", "--key-separator", ":", input="a:1\nb:2\nc:3\nd:4\n")
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "worker", "--group", "sample"],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (not out.exists() or len(out.read_text().splitlines()) < 4):
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0, stderr
    assert "stopped" in stderr
    values = sorted(line.split()[2] for line in out.read_text().splitlines())
    assert values == ["1", "2", "3", "4"]
    offsets = dict(models.CommittedOffset.objects.filter(group__name="sample").values_list("partition", "offset"))
    ends = {p.number: p.next_offset for p in models.Partition.objects.filter(topic__name="sample.events")}
    assert offsets == {k: v for k, v in ends.items() if v}
    assert not models.GroupMember.objects.filter(group__name="sample").exists()  # it left the group


def test_groups_configure_and_share_group_describe(manage, command):
    from queueing import share

    topics.create_topic("cmd.jobs", partitions=1)
    manage("produce", "cmd.jobs", input="a\nb\nc\n")
    configured = manage("groups", "configure", "pool", "--share", "--delivery-limit", "2", "--lock-duration-ms", "60000")
    assert configured.returncode == 0, configured.stderr
    member = share.ShareConsumer("pool", ["cmd.jobs"], auto_offset_reset="earliest", max_records=2)
    first, second = member.poll(timeout=0)
    member.accept(first)
    member.flush()
    described = manage("groups", "describe", "pool")
    assert described.returncode == 0, described.stderr
    row = [line.split() for line in described.stdout.splitlines() if line.startswith("pool")]
    assert row == [["pool", "cmd.jobs", "0", "1", "3", "2", "1", "0", "1", "0"]]
    every = manage("groups", "describe")  # every group: the share ones too
    assert [line.split() for line in every.stdout.splitlines() if line.startswith("pool")] == row
    resets = manage("groups", "describe", "pool", "--resets")
    assert resets.returncode == 2
    assert resets.stderr.strip() == "CommandError: 'pool' is a share group: it has no offsets to reset, so no resets"
    # The member last beat when it polled; the commands above each start Django in a process of
    # their own, which on a loaded machine took longer than the 10 s session timeout in all.
    member.heartbeat()
    listed = manage("groups", "list", env={"SLUICE_SESSION_TIMEOUT_MS": "120000"}).stdout
    assert any(line.split()[:3] == ["pool", "share", "Stable"] for line in listed.splitlines())
    member.close()
    groups.configure_group("kept", delivery_limit=4)
    for args, message in [
        (("groups", "configure", "pool", "--share"), "nothing to change"),
        (("groups", "configure", "pool", "--backoff", "linear"), "invalid choice"),
        (("groups", "configure", "pool", "--share", "--backoff-levels-ms", "1,x"), "whole numbers"),
        (("groups", "configure", "pool", "--delivery-limit", "0"), "must be at least 1"),
        (("groups", "configure", "pool", "--share", "--dead-letter-topic", "bad name"), "Invalid topic name"),
        (("groups", "configure", "ordered", "--lock-duration-ms", "100"), "for share groups"),
        # Not an ordered group beside the share group of the same name.
        (("groups", "configure", "pool", "--delivery-limit", "3"), "'pool' is a share group: add --share"),
        (("groups", "configure", "kept", "--share", "--delivery-limit", "3"), "'kept' is an ordered group"),
    ]:
        result = command(*args)
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr)
    assert models.ShareGroup.objects.get(name="pool").delivery_limit == 2
    assert not models.ConsumerGroup.objects.filter(name__in=["ordered", "pool"]).exists()
    assert not models.ShareGroup.objects.filter(name="kept").exists()


def test_delayed_command(manage, command):
    from queueing import producer

    topics.create_topic("cmd.later", partitions=1)
    first = producer.send("cmd.later", b"a", key="k1", delay=3600)
    second = producer.send("cmd.later", b"b", delay=7200)
    listed = manage("delayed", "list", "--topic", "cmd.later")
    assert listed.returncode == 0, listed.stderr
    ids = [line.split()[0] for line in listed.stdout.splitlines()[1:-1]]
    assert ids == [str(first.id), str(second.id)] and "2 record(s) waiting." in listed.stdout
    assert manage("delayed", "cancel", str(first.id)).returncode == 0
    moved = manage("delayed", "reschedule", str(second.id), "--delay", "10")
    assert moved.returncode == 0 and "is now due at" in moved.stdout
    for args, message in [
        (("delayed", "cancel", str(first.id)), "No delayed record"),
        (("delayed", "reschedule", str(second.id)), "one of the arguments --at --delay --level is required"),
        (("delayed", "reschedule", str(second.id), "--at", "tomorrow"), "not an ISO-8601"),
        (("delayed", "reschedule", str(second.id), "--level", "40"), "1 to 18"),
        (("delayed", "reschedule", str(second.id), "--delay", "-3"), "positive"),
        (("delayed", "cancel", "x"), "is not a whole number"),
    ]:
        result = command(*args)
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr)
    assert list(models.DelayedRecord.objects.values_list("id", flat=True)) == [second.id]
