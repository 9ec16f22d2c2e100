"""bench/latency.py with one short cell: the harness (its database, the sender and consumer
processes, the table) keeps working, and a burst cell is judged by the rate its bursts came at. No
timing is asserted; the figures of such a run mean nothing."""
import pytest

pytestmark = pytest.mark.acceptance


def test_a_burst_cell_runs_end_to_end_and_is_judged_by_its_bursts_rate(run_bench):
    done, (row,) = run_bench("latency.py", "--only", "bursts", "--only", "1000/s", "--only", "ordered",
                             "--seconds", "1", database="latency", timeout=120)
    assert row["producer"] == "send, bursts of 25 x4" and row["consumer"] == "ordered"
    assert row["lost"] == 0 and row["duplicates"] == 0 and row["received"] == row["sent"] > 0
    assert row["late_wakeups"] == 0
    assert row["burst_rate"] > 0
    assert row["p99_goal_ms"] == (15 if row["burst_rate"] <= 1000 else 50)
    assert f"bursts came at {row['burst_rate']:,}/s" in row["notes"]
    assert "send, bursts of 25 x4" in done.stdout
