"""bench/metrics.py with tiny counts: the harness (database, pages, table) keeps working. No timing
is asserted; the figures of such a run mean nothing."""
import pytest

pytestmark = pytest.mark.acceptance


def test_the_metrics_bench_times_every_page_and_drops_its_database(run_bench):
    done, table = run_bench("metrics.py", "--topics", "3", "--partitions", "2", "--groups", "2", "--records", "600",
                            "--history", "2000", "--scrapes", "1", database="metrics", timeout=300)
    assert table["records"] == 600
    assert [row["page"] for row in table["pages"]][0] == "/metrics"
    assert table["pages"][0]["full"]["queries"] == 12
    assert "/metrics" in done.stdout and "goal" in done.stdout
