"""The task worker: a share-group member of a queue's topic that runs tasks in child processes and
writes each task's outcome in the transaction that acknowledges its record."""
import dataclasses
import datetime
import logging
import multiprocessing
import multiprocessing.connection
import os
import socket
import time
import uuid

from django.conf import settings
from django.db import connection, transaction
from django.db.models.functions import Now
from django.utils import timezone

from queueing import loops, share
from scheduler import control, exceptions, execution, limits, models, storage, tasks, workflows

logger = logging.getLogger("sluice.tasks")
PRUNE_EVERY_S = 600
# The longest the loop waits on its processes (or a poll waits beside them) before it looks at the
# time limits and the locks again.
PROCESS_WAIT_S = 0.2
# A child gets a batch of jobs at once, so the pipe and the database work of starting and recording
# are paid once a batch: as many as it is expected to run in BATCH_WINDOW_S (by the tasks' recent
# run time), at most MAX_BATCH, at least one (a long task is sent alone, as it always was, and
# never waits in a child behind another).
BATCH_WINDOW_S = 0.05
MAX_BATCH = 256
RECORDED = object()  # an outcome written (its slot's entry goes at the end of _record_outcomes)
ABORTED = execution.error_class_path(exceptions.TaskAborted())


def _is_uuid(value):
    try:
        uuid.UUID(value)
    except (TypeError, ValueError, AttributeError):
        return False
    return True


class LockLost(Exception):
    """The record's lock lapsed and it was acquired again: this worker's outcome must not count."""


class OverLimit(Exception):
    """A start refused by a limit (rolls back the slot or start taken before it)."""

    def __init__(self, over):
        super().__init__(over)
        self.over = over


@dataclasses.dataclass(kw_only=True)
class Running:
    record: object
    job: execution.Job
    definition: object
    started: float
    hard_deadline: float | None = None  # set when the child says the job started
    limited: bool = False  # holds a concurrency slot, renewed with the lock


class Slot:
    """One child process that runs the jobs of a batch one at a time, in order (execution.serve)."""

    def __init__(self, context, database, modules, number):
        self.conn, child = context.Pipe()
        self.process = context.Process(target=execution.serve, args=(child, database, modules), daemon=True,
                                       name=f"task-slot-{number}")
        self.process.start()
        child.close()
        self.ready = False
        self.batch = []  # the Running tasks sent, in order, until their outcomes are recorded
        # What came of the first len(outcomes) of them, until recorded (kept across a lost database
        # connection); the child runs them in order, so the next one is the one it runs.
        self.outcomes = []

    @property
    def free(self):
        """Ready for another batch: every outcome of the last one came (recorded or not yet)."""
        return self.ready and self.current is None

    @property
    def running(self):
        """The first task of the batch not recorded yet (None: the slot is idle)."""
        return self.batch[0] if self.batch else None

    @property
    def current(self):
        """The task the child runs now (or will run next), None if every outcome came."""
        return self.batch[len(self.outcomes)] if len(self.outcomes) < len(self.batch) else None

    def kill(self):
        self.process.kill()
        self.process.join(5)
        self.conn.close()

    def stop(self, timeout=5.0):
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.process.join(timeout)
        if self.process.is_alive():
            self.kill()
        self.conn.close()


class TaskWorker(loops.Loop):
    """Runs the tasks of one queue, concurrency at a time, each in a child process of its own.

    The worker is one member of the queue's share group: it acquires at most as many records as it
    has free processes, renews their locks while the tasks run, kills a task that passes its hard
    time limit, and writes each outcome (result, retry after the back-off, failure and dead letter)
    in the transaction that acknowledges the record; if the lock was lost meanwhile, the outcome is
    discarded, so a task's result is recorded once. On stop it takes nothing new, lets running tasks
    finish within the grace period, and hands the rest back.
    """

    name = "task worker"

    def __init__(self, queue, *, concurrency=1, grace=30.0, poll_timeout=1.0):
        super().__init__()
        self.queue = queue
        self.group = tasks.topic_for(queue)
        self.concurrency = concurrency
        self.grace = grace
        self.poll_timeout = poll_timeout
        self.worker_id = f"{socket.gethostname()}/{os.getpid()}"
        self.name = f"task worker of queue {queue} ({concurrency} process(es))"
        self.role = f"group {tasks.topic_for(queue)}"
        self.consumer = None
        self.slots = []
        # Tasks a process handed back unstarted (the job before them in its batch ran long): shared
        # among the free processes at the next turn, or released for any worker when none is free.
        self.handed_back = []
        self.recorded = 0
        self._renewed = time.monotonic()
        self._pruned = time.monotonic()
        self._run_s = None  # the recent run time of a task (moving average), which sizes batches
        self._context = multiprocessing.get_context("spawn")

    # The loop ----------------------------------------------------------------------------

    def wait(self):
        """run_once waits by itself (on the log, or on the processes)."""

    def run_once(self):
        if self.consumer is None:
            self._start()
        self._collect(0, record=False)
        self._enforce_limits()
        self._renew()
        self._prune()
        self.consumer.heartbeat()
        free = [s for s in self.slots if s.free]
        if self.handed_back:
            free = self._resend(free)
        if free and not self.stop_event.is_set():
            # Before each poll, so a band created before it is polled in it (one small read).
            self.consumer.subscribe(tasks.bands(self.queue))
            # Outcomes to record: look and return at once, to record them. Processes still running
            # (or starting): the poll waits for records (LISTEN) and for them, whichever comes
            # first, so neither a free process nor a finished one waits on the other. Else the poll
            # waits for records only.
            unrecorded = any(s.outcomes for s in self.slots)
            awaited = [s.conn for s in self.slots if not s.free]
            timeout = 0 if unrecorded else (PROCESS_WAIT_S if awaited else self.poll_timeout)
            records = self.consumer.poll(timeout=timeout, max_records=len(free) * self._batch_size(), wake=awaited)
            self._send(free, self._dispatch_many(records))
        # The outcomes that came are recorded after the next batch was sent: its processes run it
        # meanwhile, so a task waits for neither the recording nor its transaction.
        self._record_outcomes()
        if not any(s.free for s in self.slots):
            # Every process runs (or starts): only one of them can take the next task.
            self._collect(PROCESS_WAIT_S, record=False)
        return True

    def _start(self):
        tasks.ensure_queue(self.queue)
        # The task layer counts attempts itself (max_attempts per task): the engine's delivery
        # limit must stay out of its way, or it would dead-letter a record whose task is retrying.
        share.configure_group(self.group, delivery_limit=tasks.MAX_ATTEMPTS_LIMIT)
        # One member over every priority band of the queue, polled highest band first.
        # Polls commit without waiting for the WAL flush: the worker accepts records in the
        # transaction that records their outcomes, so a poll carries acquisitions only, and one
        # lost in a server crash means the task is delivered again.
        self.consumer = share.ShareConsumer(self.group, tasks.bands(self.queue), auto_offset_reset="earliest",
                                            max_records=self.concurrency, client_id="task-worker", ordered=True,
                                            durable_polls=False)
        modules = sorted({t.module for t in tasks.registered().values()})
        database = connection.settings_dict["NAME"]
        self._slot_args = (self._context, database, modules)
        self.slots = [Slot(*self._slot_args, n) for n in range(self.concurrency)]
        logger.info("%s started %d process(es)", self.name, len(self.slots))

    def _replace(self, slot):
        index = self.slots.index(slot)
        self.slots[index] = Slot(*self._slot_args, index)
        return self.slots[index]

    # Starting a task ---------------------------------------------------------------------

    def _batch_size(self):
        if self._run_s is None:
            return 1
        return max(1, min(MAX_BATCH, int(BATCH_WINDOW_S / max(self._run_s, 1e-6))))

    def _send(self, free, started):
        """Share the started tasks among the free slots, each slot's share in one message."""
        size = -(-len(started) // len(free)) if started else 0
        for slot in free:
            batch, started = started[:size], started[size:]
            if not batch:
                break
            # Behind the outcomes of the last batch still to record, if any (they keep their places).
            slot.batch.extend(batch)
            try:
                slot.conn.send([(r.job, r.definition.soft_time_limit, r.definition.hard_time_limit is not None)
                                for r in batch])
            except OSError:  # the process died since it said it was ready
                self._lost_process(slot)

    def _resend(self, free):
        """Share the tasks handed back by a process among the free ones, as a poll's are; with none
        free, release them for any worker. Return the processes still free."""
        waiting, self.handed_back = self.handed_back, []
        if free and not self.stop_event.is_set():
            used = min(len(free), len(waiting))
            self._send(free[:used], waiting)
            return free[used:]
        for running in waiting:
            self._hand_back(running)
        return free

    def _dispatch_many(self, records):
        """Mark the tasks of a poll's records running; return them (Running) in the records' order.

        The common case, a record's first delivery of a task that may start (active and not
        running, this generation, registered without a rate limit, no concurrency key, not lost too
        often), is done for all of them by one statement (storage.start_tasks). Every other record
        goes through _dispatch, one transaction each.
        """
        first = {}
        for record in records:
            data = record.data if isinstance(record.data, dict) else {}
            if record.delivery_count == 1 and _is_uuid(data.get("id")):
                first[data["id"]] = (record, data.get("generation", 1))
        fast = {}
        if first:
            # Registered names without a rate limit (a Django task found by its path goes the
            # per-record way, as tasks.get imports it).
            known = tasks.registered()
            names = [name for name, definition in known.items() if definition.rate_limit is None]
            rows = storage.start_tasks(ids=list(first), generations=[g for _, g in first.values()], names=names,
                                       max_lost=settings.SLUICE["TASK_MAX_LOST"], worker=self.worker_id)
            for task_id, name, args, kwargs, attempt in rows:
                record = first[str(task_id)][0]
                job = execution.Job(task_id=str(task_id), name=name, args=args, kwargs=kwargs, attempt=attempt)
                fast[id(record)] = Running(record=record, job=job, definition=known[name], started=time.monotonic())
        started = []
        for record in records:
            running = fast.get(id(record)) or self._dispatch(record)
            if running is not None:
                started.append(running)
        return started

    @staticmethod
    def _running(record, row, definition, attempt):
        job = execution.Job(task_id=str(row.id), name=row.task_name, args=row.args, kwargs=row.kwargs,
                            attempt=attempt)
        return Running(record=record, job=job, definition=definition, started=time.monotonic(),
                       limited=row.concurrency_key is not None)

    def _dispatch(self, record):
        """Mark the record's task running and return it (Running); settle records that must not run
        and return None."""
        data = record.data if isinstance(record.data, dict) else {}
        task_id = data.get("id")
        with transaction.atomic():
            row = models.TaskResult.objects.select_for_update().filter(id=task_id).first() if task_id else None
            stale = row is not None and data.get("generation", 1) != row.generation
            if row is None or row.state not in models.ACTIVE or stale:
                # Cancelled, finished, pruned, sent again by a retry (this record is the old one), or
                # not a task: it does not start from this record.
                why = "no such task" if row is None else ("an older record" if stale else row.state)
                logger.info("skipping %s: %s", task_id, why)
                self.consumer.settle(record, share.ACCEPT)
                return None
            lost = models.TaskAttempt.objects.filter(task=row, outcome=models.TaskAttempt.Outcome.RUNNING).update(
                outcome=models.TaskAttempt.Outcome.LOST, ended_at=Now(),
                error_class=execution.error_class_path(exceptions.WorkerLost()),
                error_message="its worker stopped without a word (killed, or its lock lapsed)",
            )
            row.lost += lost
            try:
                definition = tasks.get(row.task_name)
            except exceptions.TaskNotRegistered as error:
                self._fail_now(record, row, error)
                return None
            if row.lost > settings.SLUICE["TASK_MAX_LOST"]:
                # A task that keeps taking its worker down (out of memory, say) must not do it forever.
                self._fail_now(record, row, exceptions.WorkerLost(
                    f"{row.lost} run(s) lost with their workers, more than SLUICE_TASK_MAX_LOST allows"
                ))
                return None
            try:
                started = self._take_limits(row, definition)
            except OverLimit as refused:
                self._defer(record, row, refused.over)
                return None
            row.state, row.attempts, row.worker = models.State.RUNNING, row.attempts + 1, self.worker_id
            row.started_at = row.started_at or started or timezone.now()
            row.eta = row.delayed_id = None
            row.save(update_fields=["state", "attempts", "lost", "worker", "started_at", "eta", "delayed_id"])
            models.TaskAttempt.objects.create(task=row, number=row.attempts, worker=self.worker_id,
                                              **({"started_at": started} if started else {}))
        return self._running(record, row, definition, row.attempts)

    def _take_limits(self, row, definition):
        """Take the task's concurrency slot and count its start against its rate, in a savepoint;
        return the start's time if rate-limited (the attempt's start, as the window counted it).
        Raises OverLimit, with both rolled back, if either refuses."""
        with transaction.atomic():
            over = limits.take_slot(row, worker=self.consumer.member_id, lease_ms=self.consumer.lock_ms)
            if over is not None:
                raise OverLimit(over)
            if definition.rate_limit is None:
                return None
            started = limits.take_start(definition.rate_limit, row.task_name)
            if isinstance(started, limits.Over):
                raise OverLimit(started)
            return started

    def _defer(self, record, row, over):
        """Hand a task over a limit back, uncounted (no attempt, no delivery), until it may start."""
        if not self.consumer.settle(record, share.DEFER, delay=over.delay):
            return  # the lock lapsed meanwhile: another worker has the record now
        if over.key is not None:
            limits.wait_for_slot(row, record, group=self.group)
        # A run lost with its worker (counted above) leaves the task queued, not running.
        state = models.State.QUEUED if row.state == models.State.RUNNING else row.state
        models.TaskResult.objects.filter(id=row.id).update(lost=row.lost, state=state)
        logger.debug("task %s over its limit (%s): handed back for %.3fs", row.id, over.key or "rate", over.delay)

    def _fail_now(self, record, row, error):
        """Fail a task without running it (unknown task, attempts used up), with its dead letter."""
        message = f"{execution.error_class_path(error)}: {error}"
        if self.consumer.settle(record, share.REJECT, error=message):
            models.TaskResult.objects.filter(id=row.id).update(
                state=models.State.FAILED, finished_at=Now(), lost=row.lost,
                error_class=execution.error_class_path(error), error_message=str(error), traceback="",
            )
            workflows.task_settled(record.data)  # its workflow fails with it
            storage.finished([row.id])
            self.recorded += 1  # an outcome, if not a run's
            logger.warning("task %s failed without running: %s", row.id, message)

    # Finishing a task --------------------------------------------------------------------

    def _collect(self, timeout, *, record=True):
        """Take what the processes sent within timeout seconds (all of it, as a batch's outcomes come
        together): readiness, starts, outcomes, deaths; then record the outcomes (unless record is
        false: the loop records them once it sent the next batch)."""
        conns = {s.conn: s for s in self.slots}
        for conn in multiprocessing.connection.wait(list(conns), timeout):
            slot = conns[conn]
            try:
                while conn.poll():
                    self._take(slot, conn.recv())
            except (EOFError, OSError):
                self._lost_process(slot)
        if record:
            self._record_outcomes()

    def _take(self, slot, message):
        if message[0] == "ready":
            slot.ready = True
        elif message[0] == "started":
            current = slot.current
            if current is not None and current.definition.hard_time_limit:
                current.hard_deadline = time.monotonic() + current.definition.hard_time_limit
        elif message[0] == "outcomes":
            # The jobs that ended since the last message, and how long they ran in the child: their
            # mean run time counts as one sample.
            _, outcomes, ran = message
            outcomes = outcomes[:len(slot.batch) - len(slot.outcomes)]
            if outcomes:
                took = ran / len(outcomes)
                self._run_s = took if self._run_s is None else 0.8 * self._run_s + 0.2 * took
                slot.outcomes.extend(outcomes)
        elif message[0] == "handback":
            # The jobs behind a slow one in the batch, not started: the tail of what the child has.
            ids = set(message[1])
            back = [r for r in slot.batch[len(slot.outcomes):] if r.job.task_id in ids]
            slot.batch = [r for r in slot.batch if not any(r is b for b in back)]
            self.handed_back.extend(back)

    def _record_outcomes(self):
        """Record the outcomes that came. A lost database connection raises out of here with the
        outcomes not written kept (and their locks renewed), to be recorded once the loop
        reconnected: a blip must not make a finished task run again."""
        pairs = [(slot, i) for slot in self.slots for i, o in enumerate(slot.outcomes) if o is not RECORDED]
        if not pairs:
            return
        try:
            self._finish_many(pairs)
        finally:
            for slot in self.slots:
                while slot.outcomes and slot.outcomes[0] is RECORDED:
                    slot.outcomes.pop(0)
                    slot.batch.pop(0)

    def _finish_many(self, pairs):
        """Record the successes of pairs (slot, index) in one transaction, then each failure in one
        of its own (marking each RECORDED as it commits)."""
        ok = [(slot, i) for slot, i in pairs if slot.outcomes[i][0] == execution.OK]
        if ok:
            self._succeed_many([(slot.batch[i], slot.outcomes[i][1]) for slot, i in ok])
            for slot, i in ok:
                slot.outcomes[i] = RECORDED
        for slot, i in pairs:
            if slot.outcomes[i] is not RECORDED:
                self._finish(slot.batch[i], slot.outcomes[i])
                slot.outcomes[i] = RECORDED

    def _succeed_many(self, done):
        """Write the results of tasks that succeeded [(Running, value)] and accept their records in
        one transaction, with set-based statements. The acceptance is fenced per record: one whose
        lock was lost is refused, and only its result is left out (it runs again elsewhere)."""
        with transaction.atomic():
            refused = {id(r) for r in self.consumer.accept_now([running.record for running, _ in done])}
            kept = [(running, value) for running, value in done if id(running.record) not in refused]
            for running, _ in kept:
                if running.limited:
                    limits.free_slot(running.job.task_id)
            storage.succeed_tasks([(running.job.task_id, running.job.attempt, value) for running, value in kept])
            for running, _ in kept:
                workflows.task_settled(running.record.data)  # its workflow moves on with this outcome
        self.recorded += len(kept)
        for running, _ in done:
            if id(running.record) in refused:
                logger.warning("task %s: lock lost before its outcome was recorded; it runs again elsewhere",
                               running.job.task_id)

    def _stop_slot(self, slot, error=None, forget=(), replace=True):
        """Kill the slot's process and start another. Outcomes that came are kept, to be recorded;
        the task it was running gets error as its outcome (handed back if error is None); the tasks
        it had not started are handed back; those whose ids are in forget (locks lost) are dropped.
        Return the task it was running."""
        came = [(r, o) for r, o in zip(slot.batch, slot.outcomes) if id(r) not in forget]
        pending = slot.batch[len(slot.outcomes):]
        slot.kill()
        fresh = self._replace(slot) if replace else slot  # not replaced: the worker is closing
        fresh.batch, fresh.outcomes = [r for r, _ in came], [o for _, o in came]
        back = []
        for n, running in enumerate(pending):
            if id(running) in forget:
                continue
            if n == 0 and error is not None:
                fresh.batch.append(running)
                fresh.outcomes.append((execution.ERROR, execution.error_class_path(error), str(error), "",
                                       running.definition.retry.retries(error), None))
            else:
                back.append(running)
        for running in back:
            self._hand_back(running)
        return pending[0] if pending else None

    def _lost_process(self, slot):
        code = slot.process.exitcode
        error = exceptions.WorkerLost(f"the process running the task exited with code {code}")
        if self._stop_slot(slot, error) is None:
            logger.warning("a task process exited (code %s) while idle; started another", code)
        self._record_outcomes()

    def _enforce_limits(self):
        """Kill the processes whose task passed its hard time limit; the killed task's outcome is
        recorded with the others (by the loop, once it sent the next batch)."""
        now = time.monotonic()
        for slot in list(self.slots):
            running = slot.current
            if running is None or running.hard_deadline is None or now < running.hard_deadline:
                continue
            limit = running.definition.hard_time_limit
            logger.warning("task %s passed its hard time limit (%s s): process killed", running.job.task_id, limit)
            self._stop_slot(slot, exceptions.HardTimeLimitExceeded(f"killed after its hard time limit of {limit} s"))

    def _finish(self, running, outcome):
        """Write the outcome and acknowledge the record in one transaction; discard both if the lock
        was lost (the task then runs again elsewhere, and that run's outcome is the one kept)."""
        try:
            with transaction.atomic():
                if outcome[0] == execution.OK:
                    self._succeed(running, outcome[1])
                else:
                    self._fail(running, *outcome[1:])
                workflows.task_settled(running.record.data)  # its workflow moves on with this outcome
            self.recorded += 1
        except LockLost:
            logger.warning("task %s: lock lost before its outcome was recorded; it runs again elsewhere",
                           running.job.task_id)

    def _attempt(self, running):
        return models.TaskAttempt.objects.filter(task_id=running.job.task_id, number=running.job.attempt,
                                                 outcome=models.TaskAttempt.Outcome.RUNNING)

    def _settle(self, running, fate, **options):
        if not self.consumer.settle(running.record, fate, **options):
            raise LockLost()
        if running.limited:
            limits.free_slot(running.job.task_id)

    def _succeed(self, running, value):
        self._settle(running, share.ACCEPT)
        models.TaskResult.objects.filter(id=running.job.task_id).update(
            state=models.State.SUCCEEDED, return_value=value, finished_at=Now(),
            error_class="", error_message="", traceback="",
        )
        storage.finished([running.job.task_id])
        self._attempt(running).update(outcome=models.TaskAttempt.Outcome.SUCCEEDED, ended_at=Now())

    def _fail(self, running, error_class, message, tb, retryable, countdown):
        policy = running.definition.retry
        row = models.TaskResult.objects.filter(id=running.job.task_id)
        error = {"error_class": error_class, "error_message": message, "traceback": tb}
        if error_class == ABORTED and row.filter(abort_requested_at__isnull=False).exists():
            # The task saw the abort asked for and stopped: cancelled, its attempt aborted.
            self._settle(running, share.ACCEPT)
            row.update(state=models.State.CANCELLED, finished_at=Now(), **error)
            storage.finished([running.job.task_id])
            self._attempt(running).update(outcome=models.TaskAttempt.Outcome.ABORTED, ended_at=Now(), **error)
            logger.info("task %s aborted on request", running.job.task_id)
            return
        failures = row.values_list("failures", flat=True).first() + 1
        if retryable and failures < policy.max_attempts:
            delay = countdown if countdown is not None else policy.delay(failures)
            self._settle(running, share.RELEASE, delay=delay)
            row.update(state=models.State.RETRYING, failures=failures, **error,
                       eta=Now() + datetime.timedelta(seconds=delay))
            logger.info("task %s failed (%s), retrying in %.2fs", running.job.task_id, error_class, delay)
        else:
            self._settle(running, share.REJECT, error=f"{error_class}: {message}", traceback=tb)
            row.update(state=models.State.FAILED, failures=failures, finished_at=Now(), **error)
            storage.finished([running.job.task_id])
            logger.warning("task %s failed: %s: %s", running.job.task_id, error_class, message)
        self._attempt(running).update(outcome=models.TaskAttempt.Outcome.FAILED, ended_at=Now(), **error)

    # Locks, pruning, shutdown ------------------------------------------------------------

    def _renew(self, force=False):
        """Extend the locks of the tasks sent to processes (running or waiting in a batch) every
        third of the lock duration; a task whose lock was lost anyway (a long database outage) is
        stopped, as it runs elsewhere now (its process is killed; the others of its batch that had
        not finished are handed back)."""
        held = [r for s in self.slots for r in s.batch] + self.handed_back
        if not held or (not force and time.monotonic() - self._renewed < self.consumer.lock_ms / 3000):
            return
        self._renewed = time.monotonic()
        lost = {id(r) for r in self.consumer.renew([r.record for r in held])}
        for running in [r for r in self.handed_back if id(r.record) in lost]:
            logger.warning("task %s: lock lost while handed back; it runs elsewhere", running.job.task_id)
            self.handed_back.remove(running)
        for slot in list(self.slots):
            gone = {id(r) for r in slot.batch if id(r.record) in lost}
            for running in slot.batch:
                if id(running) in gone:
                    logger.warning("task %s: lock lost while running; stopping it here", running.job.task_id)
            if gone:
                self._stop_slot(slot, forget=gone)
        # Concurrency slots are leased like locks: a slot that lapsed anyway may be another task's
        # now, so this run must stop (and its task waits for a slot again).
        limited = {r.job.task_id: (s, r) for s in self.slots for r in s.batch[len(s.outcomes):] if r.limited}
        for task_id in limits.renew_slots(limited, worker=self.consumer.member_id, lease_ms=self.consumer.lock_ms):
            slot, running = limited[task_id]
            if slot in self.slots and running in slot.batch[len(slot.outcomes):]:
                logger.warning("task %s: concurrency slot lapsed while running; stopping it here", task_id)
                self._stop_slot(slot)

    def _prune(self):
        if time.monotonic() - self._pruned >= PRUNE_EVERY_S:
            self._pruned = time.monotonic()
            control.prune()

    def close(self):
        """Let running tasks finish within the grace period, hand the others back, stop the processes."""
        if self.consumer is None:
            return
        deadline = time.monotonic() + self.grace
        if any(s.running for s in self.slots):
            logger.info("%s: waiting up to %.1fs for %d running task(s)", self.name, self.grace,
                        sum(1 for s in self.slots if s.running))
        while any(s.running for s in self.slots) and time.monotonic() < deadline:
            self._collect(min(0.2, max(0.0, deadline - time.monotonic())))
            self._enforce_limits()
            self._renew()
        for slot in list(self.slots):
            if slot.current is not None:
                self._stop_slot(slot, replace=False)
        waiting, self.handed_back = self.handed_back, []
        for running in waiting:
            self._hand_back(running)
        try:
            self._record_outcomes()
        except loops.CONNECTION_ERRORS as error:
            logger.warning("%s: outcomes not recorded (%s); their tasks run again once their locks lapse",
                           self.name, error)
        for slot in self.slots:
            slot.stop()
        self.consumer.close()
        logger.info("%s: %d outcome(s) recorded", self.name, self.recorded)

    def _hand_back(self, running):
        """Release an unfinished task's record at once for another worker; its attempt is interrupted."""
        try:
            with transaction.atomic():
                self._settle(running, share.RELEASE, delay=0)
                models.TaskResult.objects.filter(id=running.job.task_id, state=models.State.RUNNING).update(
                    state=models.State.QUEUED)
                self._attempt(running).update(outcome=models.TaskAttempt.Outcome.INTERRUPTED, ended_at=Now())
            logger.info("task %s handed back unfinished", running.job.task_id)
        except LockLost:
            pass
