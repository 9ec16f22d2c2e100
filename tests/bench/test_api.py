"""bench/api.py with tiny counts: the harness (its database, the web server, the table) keeps working.
No timing is asserted; the figures of such a run mean nothing."""
import pytest

pytestmark = pytest.mark.acceptance


def test_the_api_bench_runs_both_sides_and_drops_its_database(run_bench):
    done, rows = run_bench("api.py", "--batches", "3", "--tasks", "5", "--rounds", "2", database="api", timeout=180)
    assert "REST/Python" in done.stdout
    assert [row["figure"] for row in rows] == ["records/s, batches of 100", "single task submissions/s"]
    assert all(row["python_per_s"] > 0 and row["http_per_s"] > 0 and row["rounds"] == 2 for row in rows)
