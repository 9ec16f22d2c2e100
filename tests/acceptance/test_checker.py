"""The checker finds each anomaly it claims to find, in a small history that has only that one, and
passes a clean history with redeliveries in it."""
import pytest

from tests.acceptance import checker

PRODUCER = """
invoke p0-0 k0
ok p0-0 0 0
invoke p0-1 k0
ok p0-1 0 1
aborted p0-2 k1
invoke p0-3 k1
fail p0-3
invoke p0-4 k0
ok p0-4 0 2
"""
CONSUMER = """
read c1 1 0 0 p0-0
read c1 1 0 1 p0-1
commit c1 1 ok
read c1 1 0 2 p0-4
commit c1 1 ok
"""


def history(producer=PRODUCER, consumer=CONSUMER, *more):
    logs = [("p0", producer), ("c1", consumer), *((f"x{i}", text) for i, text in enumerate(more))]
    return checker.parse((name, text.strip().splitlines()) for name, text in logs)


def anomalies(*logs, ends=None):
    return {name: found for name, found in checker.check(history(*logs), ends=ends).items() if found}


def test_a_clean_history_has_no_anomalies():
    assert anomalies() == {}
    assert anomalies(ends={0: 3}) == {}


def test_runs_may_start_anywhere_up_to_one_past_what_was_read_before_them():
    consumer = """
        read c1 1 0 0 p0-0 1.0
        read c1 1 0 1 p0-1 1.0
        commit c1 1 ok
        read c2 2 0 2 p0-4 2.0
        read c3 3 0 0 p0-0 2.5
        read c3 3 0 1 p0-1 2.5
        read c3 3 0 2 p0-4 2.5
        commit c2 2 ok
        commit c3 3 ok
    """
    assert anomalies(PRODUCER, consumer) == {}


def test_redelivery_after_a_crash_a_rewind_or_a_rebalance_is_not_an_anomaly():
    killed = "read c1 1 0 0 p0-0\nread c1 1 0 1 p0-1"  # killed before its commit
    again = """
        read c2 2 0 0 p0-0
        commit c2 2 unknown
        rewind c2
        read c2 2 0 0 p0-0
        read c2 2 0 1 p0-1
        commit c2 2 refused
        read c2 3 0 1 p0-1
        read c2 3 0 2 p0-4
        commit c2 3 ok
    """
    assert anomalies(PRODUCER, killed, again) == {}


READ_ALL_BUT_P0_4 = "read c1 1 0 0 p0-0\nread c1 1 0 1 p0-1\ncommit c1 1 ok"
ONE_ANOMALY = {
    # p0-4 is acknowledged and nobody read it.
    "lost": (PRODUCER, READ_ALL_BUT_P0_4),
    # p0-4 was read, but no commit followed (and nobody read it again).
    "uncommitted": (PRODUCER, READ_ALL_BUT_P0_4 + "\nread c1 1 0 2 p0-4"),
    # A refused commit covers nothing.
    "uncommitted-refused": (PRODUCER, READ_ALL_BUT_P0_4 + "\nread c1 1 0 2 p0-4\ncommit c1 1 refused"),
    # p0-3's outcome was unknown; it was stored twice.
    "duplicated": (PRODUCER, CONSUMER + "read c1 1 0 3 p0-3\nread c1 1 0 4 p0-3\ncommit c1 1 ok"),
    # Acknowledged at offset 3, read at offset 2.
    "misplaced": (PRODUCER.replace("ok p0-4 0 2", "ok p0-4 0 3"), CONSUMER),
    "unexpected": (PRODUCER, CONSUMER + "read c1 1 0 3 zz-9\ncommit c1 1 ok"),
    "aborted_read": (PRODUCER, CONSUMER + "read c1 1 0 3 p0-2\ncommit c1 1 ok"),
    # After a rewind, another record at p0-1's place.
    "inconsistent_offsets": (PRODUCER, CONSUMER + "rewind c1\nread c1 1 0 1 p0-3\ncommit c1 1 ok"),
    # Back to offset 0 within one generation, without a rewind.
    "non_monotonic": (PRODUCER, CONSUMER + "read c1 1 0 0 p0-0\ncommit c1 1 ok"),
    # From offset 0 to 2 in one run; another member read 1, so the union has no hole.
    "skipped": (PRODUCER, "read c1 1 0 0 p0-0\nread c1 1 0 2 p0-4\ncommit c1 1 ok\nread c2 2 0 1 p0-1\ncommit c2 2 ok"),
    # c2 started at offset 2 (at time 5) when nobody had read past offset 0 (c1 read 1 at time 6).
    "skipped-start": (PRODUCER, "read c1 1 0 0 p0-0 1\nread c1 1 0 1 p0-1 6\ncommit c1 1 ok\n"
                                "read c2 2 0 2 p0-4 5\ncommit c2 2 ok"),
    # Offset 2 (the failed send, stored after all) never read; the reads around it are two runs.
    "holes": (PRODUCER.replace("ok p0-4 0 2", "ok p0-4 0 3"), READ_ALL_BUT_P0_4 + "\nread c1 2 0 3 p0-4\ncommit c1 2 ok"),
    # Key k0 of p0: p0-4 was sent after p0-1 but stored (and read) before it.
    "key_order": (
        PRODUCER.replace("ok p0-1 0 1", "ok p0-1 0 2").replace("ok p0-4 0 2", "ok p0-4 0 1"),
        CONSUMER.replace("0 1 p0-1", "0 1 p0-4").replace("0 2 p0-4", "0 2 p0-1"),
    ),
    "late_commits": (PRODUCER, CONSUMER + "late tail-gap position=3 first=4"),
}


def test_every_anomaly_has_a_case():
    assert {case.split("-")[0] for case in ONE_ANOMALY} == set(checker.ANOMALIES)


@pytest.mark.parametrize("case", ONE_ANOMALY)
def test_the_checker_reports_each_anomaly_alone(case):
    assert set(anomalies(*ONE_ANOMALY[case])) == {case.split("-")[0]}


def test_a_tail_no_consumer_read_is_a_hole_when_the_log_end_is_known():
    assert set(anomalies(ends={0: 4})) == {"holes"}
    assert set(anomalies(ends={0: 3, 1: 1})) == {"holes"}  # a partition nobody read at all


def test_reads_out_of_send_order_for_one_key_break_key_order():
    """Offsets in order but a key's records stored on two partitions, so read out of send order."""
    producer = PRODUCER.replace("ok p0-4 0 2", "ok p0-4 1 0")
    consumer = "read c1 1 1 0 p0-4\nread c1 1 0 0 p0-0\nread c1 1 0 1 p0-1\ncommit c1 1 ok"
    found = anomalies(producer, consumer)
    assert set(found) == {"key_order"}
    assert ("stored", "p0", "k0") in found["key_order"] and any(e[0] == "read" for e in found["key_order"])
