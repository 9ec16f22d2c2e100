"""The child process a worker runs tasks in, one at a time: it runs the batch of jobs the worker
sends it and sends back each one's return value or error. A process, so a hard time limit can kill it."""
import ctypes
import dataclasses
import importlib
import os
import signal
import sys
import time
import traceback

OK, ERROR = "ok", "error"
OUTCOMES_WAIT_S = 0.002  # the longest a child keeps a quick job's outcome to send it with others


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
    conn.send(("ready", os.getpid()))
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message is None:
            return
        # A batch of jobs, run in order. Outcomes go back together, at most OUTCOMES_WAIT_S after
        # the first of them came (a message each was most of a quick task's cost here and in the
        # worker), and all before a job with a hard time limit starts: it is announced, so its
        # deadline starts when it does, and a kill at that limit must not take earlier outcomes
        # with it. A death otherwise loses the outcomes not sent yet (their tasks run again, as a
        # task does whose worker dies) and the job it was running; the worker hands the rest back.
        # Each message says how long its jobs ran, which sizes the worker's next batches.
        outcomes, ran, first = [], 0.0, 0.0
        for job, soft_time_limit, announce in message:
            if announce:
                ran = _send_outcomes(conn, outcomes, ran)
                conn.send(("started", job.task_id))
            began = time.monotonic()
            outcomes.append(run(job, soft_time_limit=soft_time_limit))
            now = time.monotonic()
            ran += now - began
            if len(outcomes) == 1:
                first = now
            elif now - first >= OUTCOMES_WAIT_S:
                ran = _send_outcomes(conn, outcomes, ran)
        _send_outcomes(conn, outcomes, ran)
        close_old_connections()


def _send_outcomes(conn, outcomes, ran):
    """Send the outcomes gathered and the seconds their jobs ran, in one message; forget them and
    return the seconds to count from (0)."""
    if outcomes:
        conn.send(("outcomes", outcomes[:], ran))
        outcomes.clear()
    return 0.0
