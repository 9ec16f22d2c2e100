"""The lag sampler: samples from offsets, retention of its history, and its command."""
import datetime

from django.core.management import call_command
from django.test import override_settings
from django.utils import timezone

from console import lag, models
from queueing import consumer, producer, topics


def test_a_sample_is_one_row_per_group_and_topic_with_lag_from_offsets(db):
    topics.create_topic("orders", partitions=1)
    producer.send_batch("orders", [b"a", b"b", b"c"])
    member = consumer.Consumer("billing", ["orders"], auto_offset_reset="earliest")
    try:
        seen = 0
        for _ in range(10):
            seen += len(member.poll(timeout=0.2))
            if seen == 3:
                break
        member.commit()
    finally:
        member.close(commit=False)
    producer.send_batch("orders", [b"d", b"e"])
    assert lag.sample() == 1
    row = models.LagSample.objects.get()
    assert (row.group_name, row.topic_name, row.end_offset_total, row.lag) == ("billing", "orders", 5, 2)


@override_settings(SLUICE_CONSOLE={"LAG_SAMPLE_S": 1, "LAG_RETENTION_S": 60})
def test_samples_older_than_the_retention_are_dropped(db):
    old = models.LagSample.objects.create(group_name="g", topic_name="t", lag=1, end_offset_total=1,
                                          sampled_at=timezone.now() - datetime.timedelta(seconds=61))
    kept = models.LagSample.objects.create(group_name="g", topic_name="t", lag=2, end_offset_total=2,
                                           sampled_at=timezone.now() - datetime.timedelta(seconds=30))
    lag.sample()
    assert list(models.LagSample.objects.values_list("id", flat=True)) == [kept.id]
    assert not models.LagSample.objects.filter(id=old.id).exists()


def test_the_command_takes_one_sample(db, capsys):
    call_command("lagsampler", "--once")
    assert capsys.readouterr().out == "stored 0 lag samples\n"


def test_the_loop_stops_at_once_when_asked(db):
    sampler = lag.LagSampler()
    assert sampler.run_once() is False
    sampler.stop()
    sampler.run()
