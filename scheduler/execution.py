"""The child process a worker runs tasks in, one at a time: it runs the batch of jobs the worker
sends it and sends back each one's return value or error. A process, so a hard time limit can kill it."""
import collections
import ctypes
import dataclasses
import importlib
import os
import signal
import sys
import threading
import time
import traceback

OK, ERROR = "ok", "error"
OUTCOMES_WAIT_S = 0.002  # the longest a child keeps a quick job's outcome to send it with others
# A job running longer than this hands back the jobs waiting behind it in its batch.
HANDBACK_S = 0.1
WATCH_S = 0.01  # how often a child looks at the job it runs, while it runs a batch


@dataclasses.dataclass(frozen=True, kw_only=True)
class Job:
    """What the worker sends a child: one run of a task."""

    task_id: str
    name: str
    args: list
    kwargs: dict
    attempt: int


class TaskContext:
    """Given first to a task defined with takes_context=True."""

    def __init__(self, task_id, attempt):
        self.task_id = task_id
        self.attempt = attempt

    def progress(self, current, total=None, message=""):
        """Record how far the task is (readable from any process while it runs); raise TaskAborted
        if an abort was asked for (the progress is recorded first)."""
        from scheduler import models

        models.TaskResult.objects.filter(id=self.task_id, state=models.State.RUNNING).update(
            progress_current=current, progress_total=total, progress_message=str(message)[:10_000]
        )
        self.check_abort()

    @property
    def aborted(self):
        """Whether an abort of this task was asked for (one read of its row: it sees a request as
        soon as the request committed)."""
        from scheduler import models

        return models.TaskResult.objects.filter(id=self.task_id, abort_requested_at__isnull=False).exists()

    def check_abort(self):
        """Raise TaskAborted if an abort of this task was asked for."""
        from scheduler import exceptions

        if self.aborted:
            raise exceptions.TaskAborted()


def error_class_path(error):
    kind = type(error)
    return f"{kind.__module__}.{kind.__qualname__}"


def run(job, *, soft_time_limit=None):
    """Run one job here; return (OK, value) or (ERROR, class path, message, traceback, retryable,
    countdown). The task's definition decides which errors are retried. A Django task runs through
    backends.Attempt, which sends Django's task_started and task_finished signals around it."""
    from scheduler import exceptions, tasks

    try:
        definition = tasks.get(job.name)
    except exceptions.TaskNotRegistered as error:
        return ERROR, error_class_path(error), str(error), "", False, None
    django = None
    if soft_time_limit:
        signal.signal(signal.SIGALRM, _soft_limit_reached)
        signal.setitimer(signal.ITIMER_REAL, soft_time_limit)
    try:
        try:
            if definition.django_task is not None:
                from scheduler import backends

                django = backends.Attempt(definition.django_task, job.task_id)
                value = django.call(job.args, job.kwargs)
            else:
                args = ([TaskContext(job.task_id, job.attempt)] if definition.takes_context else []) + list(job.args)
                value = definition.func(*args, **job.kwargs)
        finally:
            if soft_time_limit:
                signal.setitimer(signal.ITIMER_REAL, 0)
        tasks.check_json(value, what="return value", task=job.name)
    except Exception as error:  # noqa: BLE001 - any failure of a task is reported, never raised
        if isinstance(error, exceptions.Retry):
            outcome = ERROR, error_class_path(error), str(error), traceback.format_exc(), True, error.countdown
        elif isinstance(error, exceptions.TaskAborted):  # never retried: the worker ends the task cancelled
            outcome = ERROR, error_class_path(error), str(error), traceback.format_exc()[-50_000:], False, None
        else:
            outcome = (ERROR, error_class_path(error), str(error)[:10_000], traceback.format_exc()[-50_000:],
                       definition.retry.retries(error), None)
        if django is not None:
            django.failed(outcome[1], outcome[3])  # in the handler: receivers see sys.exc_info()
        return outcome
    if django is not None:
        django.succeeded(value)
    return OK, value


def _soft_limit_reached(signum, frame):
    from scheduler import exceptions

    raise exceptions.SoftTimeLimitExceeded("the task ran past its soft time limit")


def _die_with_parent():
    """Ask Linux to SIGKILL this process when the worker that started it dies (a SIGKILLed worker
    must not leave a task running beside its redelivery)."""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
        if os.getppid() == 1:  # the parent died before the request took
            os._exit(1)


def serve(conn, database_name, modules):
    """The child's main loop: set up Django on the worker's database, then run jobs until told to stop.

    Signals are the worker's business: SIGTERM and SIGINT (a terminal's Ctrl-C reaches the whole
    process group) are ignored here, and the worker decides when a child stops or is killed.
    """
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django
    from django.conf import settings

    # The worker's database, whatever the environment says (a test database, say); set before
    # anything connects.
    settings.DATABASES["default"]["NAME"] = database_name
    django.setup()
    from django.db import close_old_connections

    for module in modules:
        importlib.import_module(module)
    from scheduler import tasks

    tasks.discover()
    batch = Batch(conn)
    batch.send(("ready", os.getpid()))
    threading.Thread(target=batch.watch, name="sluice-batch-watch", daemon=True).start()
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message is None:
            return
        batch.run(message)
        close_old_connections()


class Batch:
    """The jobs of the batch a child runs, in order, and the outcomes still to send; shared by the
    child's main thread, which runs the jobs, and a watching thread (watch), under one lock that
    also orders what goes down the pipe.

    Outcomes go back together, at most OUTCOMES_WAIT_S after the first of them came while quick
    jobs follow (a message each was most of a quick task's cost here and in the worker); a job
    that runs longer does not keep them: the watcher sends them within WATCH_S of its start. All go
    before a job with a hard time limit starts: it is announced, so its deadline starts when it
    does, and a kill at that limit must not take earlier outcomes with it. A job that runs past
    HANDBACK_S hands back those waiting behind it in the batch, for the worker's other processes (a
    batch is made of jobs expected to be quick, which one slow job must not hold up). Each outcomes
    message says how long its jobs ran, which sizes the worker's next batches. A death loses the
    outcomes not sent yet (their tasks run again, as a task does whose worker dies) and the job it
    was running; the worker hands the rest back.
    """

    def __init__(self, conn):
        self.conn = conn
        self.changed = threading.Condition()
        self.busy = False  # a batch is running (the watcher looks every WATCH_S meanwhile)
        self.waiting = collections.deque()  # (job, soft time limit, announce) not started
        self.outcomes = []
        self.first = 0.0  # when the first of the outcomes came
        self.ran = 0.0  # the seconds their jobs ran
        self.since = None  # when the job running now started

    def send(self, message):
        with self.changed:
            self.conn.send(message)

    def run(self, jobs):
        with self.changed:
            self.waiting.extend(jobs)
            self.busy = True
            self.changed.notify()
        while True:
            with self.changed:
                if not self.waiting:
                    self._send_outcomes()
                    self.since = None
                    self.busy = False
                    return
                job, soft_time_limit, announce = self.waiting.popleft()
                if announce:
                    self._send_outcomes()
                    self.conn.send(("started", job.task_id))
                self.since = time.monotonic()
            outcome = run(job, soft_time_limit=soft_time_limit)
            with self.changed:
                now = time.monotonic()
                self.ran += now - self.since
                self.since = None
                if not self.outcomes:
                    self.first = now
                self.outcomes.append(outcome)
                if now - self.first >= OUTCOMES_WAIT_S:
                    self._send_outcomes()

    def watch(self):
        """While a batch runs, look every WATCH_S: a job running past OUTCOMES_WAIT_S sends the
        outcomes before it, one past HANDBACK_S hands back the jobs behind it (the watching thread;
        a daemon, it ends with the process). A thread, not a signal: a task's soft time limit has
        the process's timer."""
        with self.changed:
            while True:
                if not self.busy:
                    self.changed.wait()
                    continue
                self.changed.wait(WATCH_S)
                running = None if self.since is None else time.monotonic() - self.since
                if running is None:
                    continue
                if self.outcomes and running >= OUTCOMES_WAIT_S:
                    self._send_outcomes()
                if self.waiting and running >= HANDBACK_S:
                    self.conn.send(("handback", [job.task_id for job, _, _ in self.waiting]))
                    self.waiting.clear()

    def _send_outcomes(self):
        """Send the outcomes gathered and the seconds their jobs ran, in one message (the lock held)."""
        if self.outcomes:
            self.conn.send(("outcomes", self.outcomes[:], self.ran))
            self.outcomes.clear()
            self.ran = 0.0
