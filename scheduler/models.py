"""Tables of the task layer: a row per task (its state, result and progress) and one per attempt."""
import os
import time
import uuid

from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models.functions import Now


class State(models.TextChoices):
    QUEUED = "queued", "queued"
    SCHEDULED = "scheduled", "scheduled (waiting for its ETA)"
    RUNNING = "running", "running"
    RETRYING = "retrying", "retrying (waiting for its back-off)"
    SUCCEEDED = "succeeded", "succeeded"
    FAILED = "failed", "failed"
    CANCELLED = "cancelled", "cancelled"


def new_task_id():
    """A UUID of version 7 (RFC 9562): 48 bits of Unix milliseconds, then random bits. Task ids
    that grow with time put new rows at the right edge of the primary key's index (random version
    4 ids scatter every insert and every update of a drain over the whole index)."""
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10))  # 12 bits after the version, 62 after the variant
    value = ((millis & 0xFFFF_FFFF_FFFF) << 80) | (0x7 << 76) | ((rand >> 62 & 0xFFF) << 64) | (0b10 << 62) | (
        rand & 0x3FFF_FFFF_FFFF_FFFF)
    return uuid.UUID(int=value)


# A task in one of these has a record in the log (or waiting to enter it) that a worker will acquire.
ACTIVE = (State.QUEUED, State.SCHEDULED, State.RETRYING, State.RUNNING)
FINISHED = (State.SUCCEEDED, State.FAILED, State.CANCELLED)


class TaskResult(models.Model):
    """One task: what to run, where it is in its life, and what came of it."""

    id = models.UUIDField(primary_key=True, default=new_task_id)
    task_name = models.CharField(max_length=255)
    queue = models.CharField(max_length=200)
    args = models.JSONField(default=list)
    kwargs = models.JSONField(default=dict)
    state = models.CharField(max_length=16, choices=State.choices)
    unique_key = models.CharField(max_length=255, null=True, blank=True)
    priority = models.SmallIntegerField(default=0, help_text="-100 to 100; higher runs first within its queue")
    concurrency_key = models.CharField(max_length=255, null=True, blank=True)
    concurrency_limit = models.IntegerField(null=True, blank=True,
                                            help_text="at most this many tasks with its concurrency key run at once")
    abort_requested_at = models.DateTimeField(null=True, blank=True,
                                              help_text="when an abort of the running task was asked for")
    enqueued_at = models.DateTimeField(db_default=Now())
    eta = models.DateTimeField(null=True, blank=True, help_text="when a scheduled or retrying task is due")
    delayed_id = models.BigIntegerField(null=True, blank=True, help_text="its delayed record while scheduled")
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    generation = models.IntegerField(
        default=1, help_text="which enqueue of the task its record belongs to (a retry by hand sends a new one)"
    )
    attempts = models.IntegerField(default=0, help_text="runs started")
    failures = models.IntegerField(default=0, help_text="runs that failed, since it was enqueued or retried by hand")
    lost = models.IntegerField(default=0, help_text="runs lost with their worker (killed), counted apart")
    worker = models.CharField(max_length=255, blank=True)
    return_value = models.JSONField(null=True, blank=True)
    error_class = models.CharField(max_length=255, blank=True)
    error_message = models.TextField(blank=True)
    traceback = models.TextField(blank=True)
    progress_current = models.BigIntegerField(null=True, blank=True)
    progress_total = models.BigIntegerField(null=True, blank=True)
    progress_message = models.TextField(blank=True)

    class Meta:
        ordering = ["-enqueued_at"]
        indexes = [
            models.Index(fields=["queue", "state"], name="task_queue_state"),
            models.Index(fields=["enqueued_at"], name="task_enqueued"),
            # Pruning reads finished tasks oldest first.
            models.Index(fields=["finished_at"], name="task_finished", condition=models.Q(finished_at__isnull=False)),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["unique_key"], name="task_unique_key_active",
                condition=models.Q(unique_key__isnull=False, state__in=[s.value for s in ACTIVE]),
            ),
        ]

    def __str__(self):
        return f"{self.task_name}[{self.id}]"


class TaskAttempt(models.Model):
    """One run of a task by a worker: when, where, and how it ended."""

    class Outcome(models.TextChoices):
        RUNNING = "running", "running"
        SUCCEEDED = "succeeded", "succeeded"
        FAILED = "failed", "failed"
        LOST = "lost", "lost (its worker died)"
        INTERRUPTED = "interrupted", "interrupted (handed back at shutdown)"
        ABORTED = "aborted", "aborted (on request, cooperatively)"

    # No constraint in the database: its check, deferred to the commit of every start, locked the
    # task's row again for each attempt (a WAL record a task). Attempts go with their task in
    # prune_results, the only delete of tasks, and in the ORM's own cascade.
    task = models.ForeignKey(TaskResult, on_delete=models.CASCADE, related_name="attempt_rows", db_constraint=False)
    number = models.IntegerField()
    worker = models.CharField(max_length=255)
    started_at = models.DateTimeField(db_default=Now())
    ended_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices, default=Outcome.RUNNING)
    error_class = models.CharField(max_length=255, blank=True)
    error_message = models.TextField(blank=True)
    traceback = models.TextField(blank=True)

    class Meta:
        ordering = ["task", "number", "id"]


class TaskFinishCount(models.Model):
    """Tasks that finished, per queue, state and 10-second period of their finish, with their run
    time (start to finish): added to in the transaction that records a finish (storage.finished,
    which every way a task finishes calls, or the worker's batch statement, succeed_tasks, with the
    same SQL), so /metrics sums a few of these rows instead of reading
    the recent tasks (a read that grew with the task rate). shard spreads concurrent writers over
    rows (the writing session's pid modulo 8), so two workers' outcome transactions rarely wait for
    each other on one counter. Rows older than an hour are pruned with the results."""

    queue = models.CharField(max_length=200)
    state = models.CharField(max_length=16, choices=State.choices)
    period = models.DateTimeField(help_text="the start of the 10-second period")
    shard = models.SmallIntegerField()
    count = models.BigIntegerField()
    run_seconds = models.FloatField(help_text="the total run time of those that started")
    run_max = models.FloatField(null=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["queue", "state", "period", "shard"],
                                               name="task_finish_count_unique")]


# Limits on starts (scheduler/limits.py): who holds a concurrency slot, who waits for one, and the
# recent starts of each rate-limited task.


class ConcurrencySlot(models.Model):
    """A running task's hold on one of its concurrency key's slots, with a lease its worker renews
    with the task's lock; a slot whose lease lapsed (its worker died) is free."""

    task = models.OneToOneField(TaskResult, on_delete=models.CASCADE, primary_key=True, related_name="slot")
    key = models.CharField(max_length=255)
    worker = models.CharField(max_length=255)
    lease_until = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["key"], name="slot_key")]


class ConcurrencyWaiter(models.Model):
    """A task handed back because its key's slots were all taken: its record, to be made available
    at once when a slot frees."""

    task = models.OneToOneField(TaskResult, on_delete=models.CASCADE, primary_key=True, related_name="waiter")
    key = models.CharField(max_length=255)
    since = models.DateTimeField(db_default=Now())
    group = models.CharField(max_length=255)
    topic = models.CharField(max_length=255)
    partition = models.IntegerField()
    offset = models.BigIntegerField()

    class Meta:
        indexes = [models.Index(fields=["key", "since"], name="waiter_key_since")]


class RateWindow(models.Model):
    """The recent starts of a rate-limited task (at most its limit of them, oldest first), updated
    under this row's lock."""

    task_name = models.CharField(max_length=255, primary_key=True)
    starts = ArrayField(models.DateTimeField(), default=list)


# Periodic schedules (scheduler/schedules.py): what fires when, and one row per fired tick.


class Schedule(models.Model):
    """A task to enqueue periodically: by a cron expression, every fixed interval, or once, in a time zone."""

    class Kind(models.TextChoices):
        CRON = "cron", "cron expression"
        INTERVAL = "interval", "fixed interval"
        ONCE = "once", "once, at a time"

    class CatchUp(models.TextChoices):
        SKIP = "skip", "skip missed ticks"
        ONCE = "once", "run once for all missed ticks"
        ALL = "all", "run each missed tick (the latest catch_up_limit)"

    class Source(models.TextChoices):
        CODE = "code", "declared in code"
        DATABASE = "database", "created in the database"

    name = models.CharField(max_length=200, unique=True)
    task_name = models.CharField(max_length=255)
    args = models.JSONField(default=list, blank=True)
    kwargs = models.JSONField(default=dict, blank=True)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    cron = models.CharField(max_length=200, blank=True, help_text="five fields, or six with seconds first")
    interval = models.DurationField(null=True, blank=True)
    at = models.DateTimeField(null=True, blank=True, help_text="a one-off schedule's time; an interval's first tick")
    timezone = models.CharField(max_length=64, default="UTC", help_text="an IANA time zone")
    enabled = models.BooleanField(default=True)
    catch_up = models.CharField(max_length=8, choices=CatchUp.choices, default=CatchUp.ONCE)
    catch_up_limit = models.IntegerField(default=10, help_text="with catch_up=all: at most this many missed ticks run")
    tick_kwarg = models.CharField(max_length=100, blank=True,
                                  help_text="if set, the task gets its tick's time (ISO 8601, UTC) in this keyword argument")
    next_run_at = models.DateTimeField(null=True, blank=True, help_text="the next tick, in UTC; none when done")
    last_tick_at = models.DateTimeField(null=True, blank=True)
    last_task_id = models.UUIDField(null=True, blank=True)
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.DATABASE)
    created_at = models.DateTimeField(db_default=Now())
    updated_at = models.DateTimeField(db_default=Now())

    class Meta:
        ordering = ["name"]
        indexes = [
            # The scheduler claims due schedules by next_run_at among the enabled ones.
            models.Index(fields=["next_run_at"], name="schedule_due", condition=models.Q(enabled=True)),
        ]

    def __str__(self):
        return self.name


class ScheduleTick(models.Model):
    """One fired tick of a schedule and the task it enqueued; unique per (schedule, tick time), so
    a tick can never be fired twice whatever the number of schedulers."""

    class Trigger(models.TextChoices):
        SCHEDULED = "scheduled", "on time"
        CATCH_UP = "catch-up", "caught up after downtime"
        MANUAL = "manual", "run now, by hand"

    schedule = models.ForeignKey(Schedule, on_delete=models.CASCADE, related_name="ticks")
    tick_at = models.DateTimeField()
    fired_at = models.DateTimeField(db_default=Now())
    trigger = models.CharField(max_length=16, choices=Trigger.choices)
    missed = models.IntegerField(default=0, help_text="earlier missed ticks this one stands for (or skipped)")
    task_id = models.UUIDField(null=True, blank=True)
    error = models.TextField(blank=True, help_text="why no task was enqueued")

    class Meta:
        ordering = ["schedule", "-tick_at"]
        constraints = [models.UniqueConstraint(fields=["schedule", "tick_at"], name="schedule_tick_once")]


# Workflows (scheduler/workflows.py): chains, groups and chords of tasks, stored as a tree of steps.


class Workflow(models.Model):
    """A chain, group or chord of tasks: its state, its result, and what failed it."""

    class State(models.TextChoices):
        RUNNING = "running", "running"
        SUCCEEDED = "succeeded", "succeeded"
        FAILED = "failed", "failed"
        CANCELLED = "cancelled", "cancelled"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    description = models.CharField(max_length=255, help_text="its shape, as chain(...), group(...), chord(...)")
    state = models.CharField(max_length=16, choices=State.choices, default=State.RUNNING)
    created_at = models.DateTimeField(db_default=Now())
    finished_at = models.DateTimeField(null=True, blank=True)
    result = models.JSONField(null=True, blank=True, help_text="its last step's result (a group's: a list)")
    error_task_id = models.UUIDField(null=True, blank=True, help_text="the task that failed or cancelled it")
    error_class = models.CharField(max_length=255, blank=True)
    error_message = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["finished_at"], name="workflow_finished",
                                condition=models.Q(finished_at__isnull=False))]

    def __str__(self):
        return f"{self.description}[{self.id}]"


class WorkflowStep(models.Model):
    """One node of a workflow's tree: a task, or a chain, group or chord of steps (its children)."""

    class Kind(models.TextChoices):
        TASK = "task", "task"
        CHAIN = "chain", "chain"
        GROUP = "group", "group"
        CHORD = "chord", "chord (a group, then a callback)"

    class State(models.TextChoices):
        PENDING = "pending", "pending (not started)"
        RUNNING = "running", "running"
        SUCCEEDED = "succeeded", "succeeded"
        FAILED = "failed", "failed"
        CANCELLED = "cancelled", "cancelled"

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="steps")
    parent = models.ForeignKey("self", on_delete=models.CASCADE, null=True, blank=True, related_name="children")
    position = models.IntegerField(help_text="its place among its parent's children, from 1")
    path = models.CharField(max_length=255, help_text="positions from the top, as 2.1; empty for the top step")
    kind = models.CharField(max_length=8, choices=Kind.choices)
    task_name = models.CharField(max_length=255, blank=True)
    args = models.JSONField(default=list, blank=True)
    kwargs = models.JSONField(default=dict, blank=True)
    options = models.JSONField(default=dict, blank=True, help_text="queue, countdown, eta of its task")
    immutable = models.BooleanField(default=False, help_text="its task does not get the previous result")
    task_id = models.UUIDField(null=True, blank=True, help_text="its task, once started")
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    remaining = models.IntegerField(default=0, help_text="a group's members not finished yet")
    result = models.JSONField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["workflow", "id"]  # steps are written top-down, depth first: id order is the tree's
        constraints = [
            models.UniqueConstraint(fields=["workflow", "path"], name="workflow_step_path"),
            # tasks show finds a task's step by its id.
            models.UniqueConstraint(fields=["task_id"], name="workflow_step_task",
                                    condition=models.Q(task_id__isnull=False)),
        ]

    def __str__(self):
        return f"{self.kind} {self.path or 'top'} of {self.workflow_id}"
