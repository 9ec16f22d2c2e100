"""Django's tasks framework across processes: django.tasks functions enqueued by one process
(`manage.py shell -c`), run by a `manage.py worker` process, their results read in a third."""
import json
import signal
import socket
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = [pytest.mark.acceptance, pytest.mark.django_db(transaction=True)]

ENQUEUE = """
import json
from tests.sampleapp import django_tasks as t
results = [t.multiply.enqueue(6, 7), t.which_run.enqueue("x"), t.explode.enqueue(), t.where.enqueue(),
           t.sleep_then_echo.enqueue("hi")]
print(json.dumps([r.id for r in results]))
"""

READ = """
import json
from django.tasks import default_task_backend
from scheduler import results
out = []
for task_id in json.loads({ids!r}):
    results.get(task_id).wait(timeout=90)
    r = default_task_backend.get_result(task_id)
    out.append({{"id": r.id, "status": r.status.value, "value": r.return_value if r.status == "SUCCESSFUL" else None,
                "errors": [e.exception_class_path for e in r.errors], "worker_ids": r.worker_ids,
                "attempts": r.attempts, "task": r.task.module_path, "finished": r.finished_at is not None}})
print(json.dumps(out))
"""


def test_a_django_task_enqueued_in_one_process_runs_on_a_worker_and_is_read_in_a_third(manage, process_env,
                                                                                          tmp_path):
    enqueued = manage("shell", "-c", ENQUEUE)
    assert enqueued.returncode == 0, enqueued.stderr
    ids = json.loads(enqueued.stdout.strip().splitlines()[-1])

    signals = tmp_path / "signals.jsonl"
    log = open(tmp_path / "worker.log", "w")
    worker = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "worker", "--queue", "sample"],
        env={**process_env, "SAMPLE_SIGNAL_LOG": str(signals), "SLUICE_POLL_FALLBACK_MS": "100"},
        stdout=subprocess.DEVNULL, stderr=log, cwd=ROOT,
    )
    try:
        read = manage("shell", "-c", READ.format(ids=json.dumps(ids)), timeout=120)
        assert read.returncode == 0, read.stderr
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(60) == 0, (tmp_path / "worker.log").read_text()

    by_id = {r["id"]: r for r in json.loads(read.stdout.strip().splitlines()[-1])}
    multiplied, context, exploded, where, echoed = (by_id[i] for i in ids)
    worker_id = f"{socket.gethostname()}/{worker.pid}"
    assert (multiplied["status"], multiplied["value"], multiplied["attempts"], multiplied["worker_ids"]) == (
        "SUCCESSFUL", 42, 1, [worker_id])
    assert multiplied["task"] == "tests.sampleapp.django_tasks.multiply"
    assert context["value"] == {"label": "x", "attempt": 1, "id": context["id"]}
    assert (exploded["status"], exploded["errors"], exploded["finished"]) == ("FAILED", ["builtins.LookupError"], True)
    assert echoed["value"] == {"echo": "hi", "ran_in_a_loop": True}

    # task_started and task_finished: sent by the worker's process that ran the tasks, not by the
    # process that enqueued them nor by the one that read them.
    sent = [json.loads(line) for line in signals.read_text().splitlines()]
    assert sorted((s["id"], s["signal"]) for s in sent) == sorted((i, s) for i in ids for s in ("started", "finished"))
    assert {s["pid"] for s in sent} == {where["value"]} and where["value"] != worker.pid
    assert {(s["id"], s["status"]) for s in sent if s["signal"] == "finished"} == {
        (r["id"], r["status"]) for r in by_id.values()}
