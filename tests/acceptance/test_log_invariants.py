"""Invariants 1 and 2 with real processes: producers and consumers in separate processes, a consumer
SIGKILLed mid-batch, connections cut with pg_terminate_backend; the checker finds no anomaly."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from django.db import connection

from queueing import models, topics
from tests.acceptance import checker
from tests.conftest import ROOT

pytestmark = [pytest.mark.acceptance, pytest.mark.django_db(transaction=True)]

AGENTS = ROOT / "tests" / "acceptance" / "agents.py"


class Agents:
    """Starts agent processes on the test database, each with its own application_name and log."""

    def __init__(self, env, folder):
        self.env = {
            **env,
            "SLUICE_SESSION_TIMEOUT_MS": "3000",
            "SLUICE_HEARTBEAT_INTERVAL_MS": "300",
            "SLUICE_POLL_FALLBACK_MS": "200",
            "SLUICE_LOG_LEVEL": "WARNING",
        }
        self.folder = folder
        self.processes = {}

    def application_name(self, name):
        # The pytest process's id keeps a concurrent run's agents out of reach of our cuts.
        return f"acceptance-{os.getpid()}-{name}"

    def start(self, command, name, *args):
        with open(self.folder / f"{name}.err", "w") as errors:
            self.processes[name] = subprocess.Popen(
                [sys.executable, str(AGENTS), command, name, *args, "--log", str(self.log(name))],
                env={**self.env, "SLUICE_APP_NAME": self.application_name(name)},
                stdout=subprocess.DEVNULL, stderr=errors, cwd=ROOT,
            )

    def log(self, name):
        return self.folder / f"{name}.log"

    def lines(self, name):
        path = self.log(name)
        return path.read_text().splitlines() if path.exists() else []

    def wait(self, name, timeout):
        """Wait for an agent to exit by itself; it must succeed."""
        process = self.processes[name]
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{name} still running after {timeout}s; its log ends {self.lines(name)[-3:]}")
        assert code == 0, f"{name} exited with {code}:\n{(self.folder / f'{name}.err').read_text()[-3000:]}"

    def wait_for(self, condition, timeout, what):
        """Wait until condition() holds; fail at once if an agent has crashed meanwhile."""
        deadline = time.monotonic() + timeout
        while not condition():
            for name, process in self.processes.items():
                code = process.poll()
                assert code in (None, 0, -signal.SIGKILL), (
                    f"{name} exited with {code}:\n{(self.folder / f'{name}.err').read_text()[-3000:]}"
                )
            assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
            time.sleep(0.05)

    def kill(self, name):
        self.processes[name].send_signal(signal.SIGKILL)
        self.processes[name].wait(timeout=10)

    def cut(self, name):
        """pg_terminate_backend every connection of one agent; return how many there were."""
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name = %s AND datname = current_database()",
                [self.application_name(name)],
            )
            return cursor.fetchone()[0]

    def kill_all(self):
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
        for process in self.processes.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass


@pytest.fixture
def agents(process_env, tmp_path):
    started = Agents(process_env, tmp_path)
    try:
        yield started
    finally:
        started.kill_all()  # before the test database is flushed: nothing may hold a lock on it


def log_ends(topic):
    return dict(models.Partition.objects.filter(topic__name=topic).values_list("number", "next_offset"))


def test_no_acknowledged_send_is_lost_and_partitions_stay_in_order(agents, tmp_path):
    topics.create_topic("acceptance.log", partitions=4)
    done, stalled = tmp_path / "producers-done", tmp_path / "c0-stalled"

    def consumer(name, *options):
        agents.start("consume", name, "acceptance.log", "checkers", "--done", str(done),
                     "--max-poll", "20", "--pause", "0.03", *options)

    consumer("c0", "--stall-after", "120", "--stalled", str(stalled))
    consumer("c1")
    consumer("c2")
    for name in ("p0", "p1", "p2"):
        agents.start("produce", name, "acceptance.log", "--count", "800", "--pause", "0.004")

    # A consumer killed in the middle of a batch (read and logged, not committed); a replacement joins.
    agents.wait_for(stalled.exists, 40, "c0 to stall in the middle of a batch")
    agents.kill("c0")
    consumer("c3")
    # Connections cut under a working producer and a working consumer, a few times over.
    cuts = {"p1": 0, "c1": 0}
    for _ in range(3):
        time.sleep(0.5)
        for name in cuts:
            cuts[name] += agents.cut(name)
    assert all(cuts.values()), f"nothing to cut: {cuts}"

    for name in ("p0", "p1", "p2"):
        agents.wait(name, timeout=60)
    done.write_text("done")
    for name in ("c1", "c2", "c3"):
        agents.wait(name, timeout=40)

    history = checker.read_logs(tmp_path)
    ends = log_ends("acceptance.log")
    found = checker.check(history, ends=ends)
    assert checker.counts(found) == dict.fromkeys(checker.ANOMALIES, 0), checker.summary(history, found)

    read = {r.id for r in history.reads}
    assert len(history.acknowledged) > 2000  # of 2400 sends, 240 rolled back: most went through the cuts
    assert set(history.acknowledged) <= read  # every acknowledged send was read
    assert history.aborted and not history.aborted & read
    committed = dict(models.CommittedOffset.objects.filter(group__name="checkers").values_list("partition", "offset"))
    assert all(ends.values()) and committed == ends  # every partition was written, and consumed to its end
    # The killed member's uncommitted half batch went to another member, at the same places.
    by_c0 = {r: r.committed for r in history.reads if r.run.startswith("c0/")}
    consumed = {(r.partition, r.offset, r.id) for r, committed in by_c0.items() if committed}
    orphaned = {(r.partition, r.offset, r.id) for r, committed in by_c0.items() if not committed} - consumed
    others = {(r.partition, r.offset, r.id) for r in history.reads if not r.run.startswith("c0/")}
    assert orphaned and orphaned <= others
    # The cuts did land: the producer retried (or gave up on) a send, the consumer rewound.
    assert any(line.startswith(("note sluice.producer", "fail")) for line in agents.lines("p1"))
    assert any(line.startswith("rewind") for line in agents.lines("c1"))


def test_concurrent_appends_to_one_partition_are_dense_and_never_commit_late(agents, tmp_path):
    """Producers in four processes append to one partition (single sends, transactions, rolled-back
    transactions, small batches and COPY-sized ones) while a reader scans it over and over: every
    snapshot is a prefix 0..n-1 and a tail reader never finds a record behind its position."""
    topics.create_topic("acceptance.one", partitions=1)
    done = tmp_path / "producers-done"
    agents.start("scan", "scanner", "acceptance.one", "--done", str(done))
    for index, batch_size in enumerate((3, 70, 3, 70)):
        agents.start("produce", f"q{index}", "acceptance.one", "--count", "500", "--pause", "0.002",
                     "--batch-every", "9", "--batch-size", str(batch_size))
    # A producer's connection cut while it appends: its open transaction, and its offsets, roll back.
    agents.wait_for(lambda: len(agents.lines("q1")) > 100, 30, "q1 to send")
    assert agents.cut("q1") >= 1
    for index in range(4):
        agents.wait(f"q{index}", timeout=60)
    done.write_text("done")
    agents.wait("scanner", timeout=30)

    scanned = [line.split() for line in agents.lines("scanner") if line.startswith(("snapshot", "scanned"))]
    assert scanned[-1][0] == "scanned"
    assert len(scanned) > 20  # the reader saw the partition grow many times while the producers ran
    # The whole partition, read back at the end, as a reader "db" for the checker.
    rows = models.Record.objects.filter(topic_id=topics.get_topic("acceptance.one").id).order_by("offset")
    stored = [("read", "db", 0, 0, r.offset, json.loads(bytes(r.value))["id"]) for r in rows]
    log = [" ".join(map(str, fields)) for fields in [*stored, ("commit", "db", 0, "ok")]]
    history = checker.parse([*((f"q{i}", agents.lines(f"q{i}")) for i in range(4)),
                             ("scanner", agents.lines("scanner")), ("db", log)])
    end = log_ends("acceptance.one")[0]
    found = checker.check(history, ends={0: end})
    assert checker.counts(found) == dict.fromkeys(checker.ANOMALIES, 0), checker.summary(history, found)
    assert [r[4] for r in stored] == list(range(end))  # dense: offsets 0..N-1
    assert len({r[5] for r in stored}) == end  # no record stored twice
    assert int(scanned[-1][3]) == end  # the tail reader read every record, in order
    assert len(history.acknowledged) > 1500 and history.aborted  # of 2000 sends, about 150 rolled back
