"""bench/tasks.py with tiny counts, Sluice only: the harness (databases, worker processes, the
table) keeps working. No timing is asserted; the figures of such a run mean nothing."""
import pytest

pytestmark = pytest.mark.acceptance


def test_the_tasks_bench_runs_sluice_end_to_end_and_drops_its_database(run_bench):
    done, (sluice,) = run_bench("tasks.py", "--no-peers", "--tasks", "40", "--singles", "5", "--rounds", "1",
                                "--rate", "40", "--latency-seconds", "0.5", "--workers", "1", database="tasks",
                                timeout=120)
    assert "Sluice" in done.stdout and "enqueue -> start" in done.stdout
    assert sluice["drained"] >= 40 + 5 and not sluice["partial"]  # and the warm-up's enqueues
    assert sluice["single_per_s"] > 0 and sluice["bulk_per_s"] > 0
    assert sluice["latency"]["finished"] == sluice["latency"]["sent"]


@pytest.mark.parametrize("peer", ["celery-sluice", "django-q2-sluice"])
def test_the_sluice_compatibility_peers_run_end_to_end(peer, run_bench, tmp_path):
    """Celery on Sluice and django-q2 on Sluice, as bench/tasks.py runs them beside their peers:
    their own database, migrated, real workers, a full drain. No timing is asserted."""
    _, row = run_bench("task_peers.py", peer, "--tasks", "20", "--singles", "2", "--drain-timeout", "60",
                       "--logs", str(tmp_path), database=peer.replace("-", "_"), timeout=240)
    if "skipped" in row:
        pytest.skip(f"{peer}: {row['skipped']}")
    assert row["drained"] >= 22 and not row["partial"]
