"""The checker finds each anomaly it claims to find, and passes a clean history."""
import pytest

from tests.acceptance.checker import check

CLEAN_SENDS = [("invoke", "a"), ("ok", "a", 0, 0), ("invoke", "b"), ("ok", "b", 0, 1), ("aborted", "x")]
CLEAN_READS = [("c1", 1, 0, 0, "a"), ("c1", 1, 0, 1, "b")]


def test_a_clean_history_has_no_anomalies():
    # A redelivery after a crash (same partition, offset and id, new generation) is allowed.
    reads = CLEAN_READS + [("c2", 2, 0, 0, "a"), ("c2", 2, 0, 1, "b")]
    assert not any(check(CLEAN_SENDS, reads).values())


@pytest.mark.parametrize("anomaly,sends,reads", [
    ("lost", CLEAN_SENDS, CLEAN_READS[:1]),
    ("duplicated", CLEAN_SENDS + [("ok", "a", 0, 2)], CLEAN_READS + [("c1", 1, 0, 2, "a")]),
    ("unexpected", CLEAN_SENDS, CLEAN_READS + [("c1", 1, 0, 2, "zz")]),
    ("aborted_read", CLEAN_SENDS, CLEAN_READS + [("c1", 1, 0, 2, "x")]),
    ("inconsistent_offsets", CLEAN_SENDS, CLEAN_READS + [("c2", 2, 0, 1, "a")]),
    ("non_monotonic", CLEAN_SENDS, [("c1", 1, 0, 1, "b"), ("c1", 1, 0, 0, "a")]),
    ("skipped", CLEAN_SENDS + [("ok", "c", 0, 2)], [("c1", 1, 0, 0, "a"), ("c1", 1, 0, 2, "c"), ("c2", 2, 0, 1, "b")]),
    ("holes", CLEAN_SENDS + [("invoke", "c")], CLEAN_READS + [("c1", 1, 0, 3, "c")]),
    ("wrong_place", [("ok", "a", 0, 5)], [("c1", 1, 0, 0, "a")]),
])
def test_the_checker_reports(anomaly, sends, reads):
    found = check(sends, reads)
    assert found[anomaly], f"{anomaly} not reported"


def test_the_checker_reports_broken_key_order():
    sends = [("ok", "a", 0, 1), ("ok", "b", 0, 0)]
    reads = [("c", 1, 0, 0, "b"), ("c", 1, 0, 1, "a")]
    assert check(sends, reads, keys={"a": ("p", "k"), "b": ("p", "k")})["key_order"] == [("p", "k")]
