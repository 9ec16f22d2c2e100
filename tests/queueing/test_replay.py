"""Replay: dead letters back to their topics, any range of any topic to another, and the command."""
import datetime
import io

import pytest
from django.db import connection

from queueing import exceptions, models, partitioner, producer, replay, topics, types
from queueing.management.progress import ProgressBar


def dead_letter(dlq, original, partition, offset, value, *, key=None, extra=None):
    """Store a record in dlq as the dead-lettering does: the failed record with DLQ_* headers."""
    headers = {
        types.DLQ_ORIGINAL_TOPIC: original,
        types.DLQ_ORIGINAL_PARTITION: str(partition),
        types.DLQ_ORIGINAL_OFFSET: str(offset),
        types.DLQ_GROUP: "billing",
        types.DLQ_ATTEMPTS: "5",
        types.DLQ_ERROR: "ValueError: cannot bill",
        types.DLQ_FAILED_AT: "2026-01-01T00:00:00+00:00",
        **(extra or {}),
    }
    return producer.send(dlq, value, key=key, headers=headers, partition=0)


def stored(name):
    """Every record of a topic, as types.Record, in partition and offset order."""
    info = topics.get_topic(name)
    return [
        types.Record(
            topic=name, partition=r.partition, offset=r.offset,
            key=None if r.key is None else bytes(r.key), value=None if r.value is None else bytes(r.value),
            value_format=r.value_format, headers=r.headers or {}, timestamp=r.timestamp,
        )
        for r in models.Record.objects.filter(topic_id=info.id).order_by("partition", "offset")
    ]


@pytest.fixture
def dlq(db):
    """billing (3 partitions) and billing.DLQ holding five dead letters of two customers and one keyless."""
    topics.create_topic("billing", partitions=3)
    topics.create_topic("billing.DLQ", partitions=1)
    dead_letter("billing.DLQ", "billing", 1, 10, {"n": 0}, key="cust-1", extra={"trace": "a"})
    dead_letter("billing.DLQ", "billing", 2, 11, {"n": 1}, key="cust-2")
    dead_letter("billing.DLQ", "billing", 1, 12, {"n": 2}, key="cust-1")
    dead_letter("billing.DLQ", "billing", 2, 13, b"raw bytes")  # keyless: goes back to partition 2
    dead_letter("billing.DLQ", "billing", 1, 14, {"n": 4}, key="cust-1")
    return "billing.DLQ"


def run(source, **options):
    skip_invalid = options.pop("skip_invalid", False)
    batch_size = options.pop("batch_size", 500)
    plan = replay.plan_replay(source, **options)
    return plan, replay.execute_replay(plan, skip_invalid=skip_invalid, batch_size=batch_size)


def test_dead_letters_go_back_to_their_original_topic_by_key(dlq):
    plan, result = run(dlq, to_original=True)
    assert (plan.count, result.replayed, result.skipped, result.last) == (5, 5, 0, ((0, 4),))
    copies = stored("billing")
    assert len(copies) == 5
    by_origin = {r.headers[types.REPLAY_ORIGIN]: r for r in copies}
    assert sorted(by_origin) == [f"billing.DLQ-0@{n}" for n in range(5)]
    first = by_origin["billing.DLQ-0@0"]
    assert first.partition == partitioner.partition_for_key(b"cust-1", 3)
    assert (first.key, first.data, first.value_format) == (b"cust-1", {"n": 0}, types.ValueFormat.JSON)
    # Back on its original topic the record is the original again: the DLQ_* headers go, others stay;
    # it is redriven to the group that failed it only.
    assert first.headers == {"trace": "a", types.REPLAY_ORIGIN: "billing.DLQ-0@0", types.REDRIVE_GROUP: "billing"}
    keyless = by_origin["billing.DLQ-0@3"]
    assert (keyless.partition, keyless.key, keyless.value) == (2, None, b"raw bytes")
    assert keyless.value_format == types.ValueFormat.BYTES
    # The dead letters themselves stay where they are.
    assert len(stored(dlq)) == 5


def test_order_per_key_holds_across_batches(dlq):
    for n in range(5, 40):
        dead_letter(dlq, "billing", 0, n, {"n": n}, key=f"cust-{n % 3}")
    run(dlq, to_original=True, batch_size=4)
    seen = {}
    for record in sorted(stored("billing"), key=lambda r: (r.partition, r.offset)):
        seen.setdefault(record.key, []).append(int(record.headers[types.REPLAY_ORIGIN].rsplit("@", 1)[1]))
    assert sum(len(v) for v in seen.values()) == 40
    assert all(offsets == sorted(offsets) for offsets in seen.values())


def test_to_topic_keeps_the_dead_letter_headers_and_source_partition_order(dlq):
    topics.create_topic("parking", partitions=2)
    plan, result = run(dlq, to_topic="parking")
    assert result.replayed == 5
    copies = stored("parking")
    keyless = [r for r in copies if r.key is None]
    assert [r.partition for r in keyless] == [0]  # source partition 0 modulo 2
    assert all(r.headers[types.DLQ_ERROR] == "ValueError: cannot bill" for r in copies)
    assert all(r.headers[types.REPLAY_ORIGIN].startswith("billing.DLQ-0@") for r in copies)
    # Naming the original topic as to_topic is going back to it: the DLQ_* headers go.
    run(dlq, to_topic="billing", offsets=[(0, 1)])
    (copy,) = stored("billing")
    assert copy.headers == {types.REPLAY_ORIGIN: "billing.DLQ-0@1"}


def test_any_topic_replays_by_offset_range_start_inclusive_end_exclusive(db):
    topics.create_topic("orders", partitions=2)
    topics.create_topic("orders.copy", partitions=2)
    producer.send_batch("orders", [{"n": n} for n in range(10)], partition=0)
    producer.send_batch("orders", [{"n": n} for n in range(10, 14)], partition=1)
    plan, result = run("orders", to_topic="orders.copy", from_offset=3, to_offset=6)
    assert plan.ranges == ((0, 3, 6), (1, 3, 4))
    assert sorted(r.data["n"] for r in stored("orders.copy")) == [3, 4, 5, 13]
    assert result.last == ((0, 5), (1, 3))
    plan, _ = run("orders", to_topic="orders.copy", partitions=[1], from_offset=2)
    assert [r.offset for r in plan.sample] == [2, 3]


def test_a_time_range_selects_by_record_timestamp(dlq):
    base = datetime.datetime(2026, 3, 1, tzinfo=datetime.UTC)
    info = topics.get_topic(dlq)
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE queueing_record SET timestamp = %s + \"offset\" * interval '1 hour' WHERE topic_id = %s",
            [base, info.id],
        )
    since, until = base + datetime.timedelta(hours=1), base + datetime.timedelta(hours=3)
    plan = replay.plan_replay(dlq, to_original=True, since=since, until=until)
    assert [r.offset for r in plan.sample] == [1, 2]  # since inclusive, until exclusive
    # A naive moment is taken as UTC.
    assert replay.plan_replay(dlq, to_original=True, since=since.replace(tzinfo=None)).count == 4
    assert replay.plan_replay(dlq, to_original=True, since=base + datetime.timedelta(days=1)).count == 0


def test_a_key_selects_and_combines_with_ranges(dlq):
    plan, result = run(dlq, to_original=True, key="cust-1", from_offset=1)
    assert [r.offset for r in plan.sample] == [2, 4]
    assert result.replayed == 2 and {r.key for r in stored("billing")} == {b"cust-1"}


def test_single_records_one_by_one(dlq):
    plan, result = run(dlq, to_original=True, offsets=[(0, 3), (0, 1), (0, 3)])
    assert plan.ranges == ((0, 1, 2), (0, 3, 4)) and result.replayed == 2
    with pytest.raises(exceptions.RecordNotFound, match=r"no record billing.DLQ-0@9"):
        replay.plan_replay(dlq, to_original=True, offsets=[(0, 9)])


def test_limit_caps_the_count(dlq):
    plan, result = run(dlq, to_original=True, limit=2, batch_size=1)
    assert (plan.count, result.replayed, result.last) == (2, 2, ((0, 1),))


def test_records_that_cannot_be_replayed_stop_everything_unless_skipped(dlq):
    producer.send(dlq, {"n": "not a dead letter"}, partition=0)  # offset 5: no DLQ_ORIGINAL_TOPIC
    dead_letter(dlq, "gone", 0, 0, {"n": 6})  # offset 6: its topic does not exist
    plan = replay.plan_replay(dlq, to_original=True)
    assert plan.count == 7 and plan.invalid_count == 2
    assert [(r.offset, r.problem) for r in plan.invalid] == [
        (5, "no sluice.dlq.topic header: not a dead letter"),
        (6, "its original topic 'gone' does not exist"),
    ]
    with pytest.raises(exceptions.UnreplayableRecords) as raised:
        replay.execute_replay(plan)
    assert "2 record(s) of billing.DLQ cannot be replayed, so nothing was sent" in str(raised.value)
    assert "billing.DLQ-0@5 (no sluice.dlq.topic header: not a dead letter); billing.DLQ-0@6 (its original" in (
        str(raised.value)
    )
    assert stored("billing") == [] and models.Producer.objects.count() == 0
    result = replay.execute_replay(plan, skip_invalid=True)
    assert (result.replayed, result.skipped, result.last) == (5, 2, ((0, 6),))
    assert len(stored("billing")) == 5


def test_a_record_larger_than_the_target_accepts_cannot_be_replayed(dlq):
    topics.create_topic("small", partitions=1, max_message_bytes=10)
    plan = replay.plan_replay(dlq, to_topic="small", offsets=[(0, 0), (0, 3)])
    assert [r.offset for r in plan.invalid] == [0]
    assert "more than topic 'small' accepts (10)" in plan.invalid[0].problem


def test_a_plan_changes_nothing_and_no_group_offset_moves(dlq):
    models.ConsumerGroup.objects.create(name="billing")
    counts = lambda: (models.Record.objects.count(), models.Producer.objects.count(),  # noqa: E731
                      models.CommittedOffset.objects.count(), models.ConsumerGroup.objects.count())
    before = counts()
    plan = replay.plan_replay(dlq, to_original=True)
    assert counts() == before
    expected = {}
    for partition, count in ((partitioner.partition_for_key(b"cust-1", 3), 3),
                             (partitioner.partition_for_key(b"cust-2", 3), 1), (2, 1)):
        target = types.TopicPartition(topic="billing", partition=partition)
        expected[target] = expected.get(target, 0) + count
    assert plan.targets == tuple(sorted(expected.items()))
    assert [r.offset for r in plan.sample] == [0, 1, 2, 3, 4] and plan.sample[3].preview == b"raw bytes"
    replay.execute_replay(plan)
    assert models.CommittedOffset.objects.count() == 0 and models.ConsumerGroup.objects.count() == 1


def test_a_replay_into_its_own_topic_stops_at_the_planned_end(db):
    topics.create_topic("loop", partitions=1)
    producer.send_batch("loop", [b"a", b"b", b"c"], partition=0)
    _, result = run("loop", to_topic="loop", batch_size=1)
    assert result.replayed == 3 and len(stored("loop")) == 6


def test_a_stopped_replay_continues_without_duplicates_from_the_offset_after_the_last(dlq):
    plan = replay.plan_replay(dlq, to_original=True)
    asked = []
    result = replay.execute_replay(plan, batch_size=2, should_stop=lambda: asked.append(1) or len(asked) > 1)
    assert (result.stopped, result.replayed, result.last) == (True, 2, ((0, 1),))
    run(dlq, to_original=True, from_offset=result.last[0][1] + 1)
    origins = sorted(r.headers[types.REPLAY_ORIGIN] for r in stored("billing"))
    assert origins == [f"billing.DLQ-0@{n}" for n in range(5)]
    # Sent by an idempotent producer: every copy carries a producer id and a sequence.
    assert not models.Record.objects.filter(topic_id=topics.get_topic("billing").id, producer_id=None).exists()


def test_progress_is_reported_after_each_batch(dlq):
    plan = replay.plan_replay(dlq, to_original=True)
    seen = []
    replay.execute_replay(plan, batch_size=2, on_progress=lambda *args: seen.append(args))
    assert seen == [(2, 0, 1), (4, 0, 3), (5, 0, 4)]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "choose one target"),
        ({"to_topic": "billing", "to_original": True}, "choose one target"),
        ({"to_original": True, "offsets": [(0, 1)], "key": "k"}, "combine with no other selection"),
        ({"to_original": True, "from_offset": -1}, "from_offset must be 0 or more"),
        ({"to_original": True, "from_offset": 3, "to_offset": 3}, "must be below to_offset 3"),
        ({"to_original": True, "since": datetime.datetime(2026, 1, 2), "until": datetime.datetime(2026, 1, 1)},
         "must be before until"),
        ({"to_original": True, "limit": 0}, "limit must be at least 1"),
        ({"to_topic": "bad name"}, "Invalid topic name"),
    ],
)
def test_wrong_arguments_are_refused(dlq, options, message):
    with pytest.raises(exceptions.QueueingError, match=message):
        replay.plan_replay(dlq, **options)


def test_missing_topics_and_partitions_are_refused(dlq):
    with pytest.raises(exceptions.TopicNotFound):
        replay.plan_replay("nope", to_original=True)
    with pytest.raises(exceptions.TopicNotFound, match="'nowhere'"):
        replay.plan_replay(dlq, to_topic="nowhere")
    with pytest.raises(exceptions.PartitionNotFound, match="no partition 4"):
        replay.plan_replay(dlq, to_original=True, partitions=[0, 4])


def test_parse_offset_spec():
    assert replay.parse_offset_spec("2:40") == (2, 40)
    for text in ("2", "a:1", "1:-3", ":", ""):
        with pytest.raises(exceptions.InvalidArgument):
            replay.parse_offset_spec(text)


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_progress_bar_writes_a_line_per_step_when_not_a_terminal():
    out, clock = io.StringIO(), FakeClock()
    bar = ProgressBar(out, 200, label="replay", step=25, tty=False, clock=clock)
    for done in range(10, 201, 10):
        clock.now += 1
        bar.update(done, f"at t-0@{done - 1}")
    bar.finish()
    lines = out.getvalue().splitlines()
    assert [line.split()[1] for line in lines] == ["50/200", "100/200", "150/200", "200/200"]
    assert lines[-1] == "replay 200/200 100%  10 rec/s  at t-0@199"


def test_progress_bar_redraws_in_place_on_a_terminal():
    out, clock = io.StringIO(), FakeClock()
    bar = ProgressBar(out, 4, width=4, tty=True, clock=clock)
    bar.update(1)
    bar.update(2)  # within a tenth of a second: not redrawn
    clock.now = 1.0
    bar.update(4)
    bar.finish()
    text = out.getvalue()
    assert text.count("\r") == 2 and text.endswith("\n") and "\n" not in text[:-1]
    assert text.endswith("\r[####] 4/4 100%  4 rec/s\x1b[K\n")


@pytest.mark.django_db(transaction=True)
def test_replay_command_as_a_new_user_runs_it(manage):
    topics.create_topic("billing", partitions=3)
    topics.create_topic("billing.DLQ", partitions=1)
    topics.create_topic("archive", partitions=1)
    for n in range(3):
        dead_letter("billing.DLQ", "billing", 0, n, {"n": n}, key=f"cust-{n}")

    dry = manage("replay", "billing.DLQ", "--to-original", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert ("Replay plan: 3 record(s) of billing.DLQ to their original topics, for the group that failed each "
            "only.") in dry.stdout
    assert "billing.DLQ-0@0" in dry.stdout and '{"n":0}' in dry.stdout
    assert "Dry run: nothing sent." in dry.stdout
    assert stored("billing") == []

    done = manage("replay", "billing.DLQ", "--to-original")
    assert done.returncode == 0, done.stderr
    assert ("Replayed 3 record(s) of billing.DLQ to billing (3), for the group that failed each; last replayed "
            "billing.DLQ-0@2.") in done.stdout
    assert "replay 3/3 100%" in done.stderr  # not a terminal: plain progress lines
    assert len(stored("billing")) == 3

    one = manage("replay", "billing.DLQ", "--to-topic", "archive", "--from-offset", "1", "--to-offset", "2")
    assert one.returncode == 0, one.stderr
    (copy,) = stored("archive")
    assert copy.headers[types.REPLAY_ORIGIN] == "billing.DLQ-0@1" and copy.headers[types.DLQ_GROUP] == "billing"

    empty = manage("replay", "billing.DLQ", "--to-original", "--from-offset", "50")
    assert empty.returncode == 0, empty.stderr
    assert "Nothing to replay" in empty.stdout and "partition 0 holds offsets 0 to 2" in empty.stdout


@pytest.mark.django_db(transaction=True)
def test_replay_command_refuses_wrong_arguments_and_changes_nothing(manage, command):
    topics.create_topic("billing", partitions=3)
    topics.create_topic("billing.DLQ", partitions=1)
    dead_letter("billing.DLQ", "billing", 0, 0, {"n": 0}, key="cust-0")
    producer.send("billing.DLQ", b"a plain record", partition=0)
    before = models.Record.objects.count()
    for args, message in [
        (("billing.DLQ",), "one of the arguments --to-topic --to-original is required"),
        (("billing.DLQ", "--to-topic", "nowhere"), "Topic 'nowhere' does not exist"),
        (("missing", "--to-original"), "Topic 'missing' does not exist"),
        (("billing.DLQ", "--to-original", "--offset", "0:1", "--from-offset", "0"), "not combine with --from-offset"),
        (("billing.DLQ", "--to-original", "--offset", "x"), "'x' is not PARTITION:OFFSET"),
        (("billing.DLQ", "--to-original", "--from-offset", "-1"), "-1 must be 0 or more"),
        (("billing.DLQ", "--to-original", "--from-offset", "5", "--to-offset", "5"), "must be below --to-offset 5"),
        (("billing.DLQ", "--to-original", "--since", "2026-02-01T00:00Z", "--until", "2026-01-01T00:00Z"), "must be before --until"),
        (("billing.DLQ", "--to-original", "--since", "yesterday"), "is not an ISO-8601 date"),
        (("billing.DLQ", "--to-original", "--partition", "7"), "has no partition 7"),
        (("billing.DLQ", "--to-original"), "billing.DLQ-0@1 (no sluice.dlq.topic header"),
    ]:
        result = command("replay", *args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert message in result.stderr, (args, result.stderr)
    assert models.Record.objects.count() == before and models.Producer.objects.count() == 0


def test_a_target_gone_since_the_plan_stops_the_replay_there(dlq):
    topics.create_topic("refunds", partitions=1)
    dead_letter(dlq, "refunds", 0, 0, {"n": 5})  # offset 5
    plan = replay.plan_replay(dlq, to_original=True)
    topics.delete_topic("refunds")
    with pytest.raises(exceptions.UnreplayableRecords, match="and the replay stopped there: billing.DLQ-0@5"):
        replay.execute_replay(plan, batch_size=2)
    assert len(stored("billing")) == 4  # the batches before it were sent
