"""The task layer's errors: one base class, each subclass's docstring its default message."""
from queueing.exceptions import QueueingError


class SchedulerError(QueueingError):
    """A task operation failed."""


class InvalidTask(SchedulerError):
    """Invalid task: {reason}"""


class NotJSON(InvalidTask):
    """The {what} of task {task!r} must be JSON (dicts with string keys, lists, strings, numbers,
    booleans and None): {reason}"""


class TaskNotRegistered(SchedulerError):
    """No task named {name!r} is registered (define it with @scheduler.task in an installed app's
    tasks.py)."""


class TaskNotFound(SchedulerError):
    """Task {id} does not exist (or its result was pruned)."""


class AlreadyEnqueued(SchedulerError):
    """A task with unique key {unique_key!r} is already queued, scheduled or running."""


class NotCancellable(SchedulerError):
    """Task {id} is in state {state}: only a queued, scheduled or retrying task can be cancelled."""


class NotAbortable(SchedulerError):
    """Task {id} is in state {state}: it has finished, there is nothing to abort."""


class NotPurged(SchedulerError):
    """Nothing purged: {reason}"""


class NotRetryable(SchedulerError):
    """Task {id} is in state {state}: only a failed or cancelled task can be retried."""


class ResultTimeout(SchedulerError):
    """Task {id} did not finish within {timeout} s (it is {state})."""


class Retry(Exception):
    """Raised by a task to be retried after countdown seconds (or the policy's back-off), within
    its max_attempts."""

    def __init__(self, countdown=None, reason=""):
        super().__init__(reason or "retry requested")
        self.countdown = countdown


class TaskAborted(Exception):
    """Raised inside a task at its first check after an abort was asked for (context.check_abort(),
    context.progress()); the task may catch it to clean up, then re-raise to end cancelled."""

    def __init__(self, message="the task was aborted on request"):
        super().__init__(message)


class SoftTimeLimitExceeded(Exception):
    """Raised inside a task that ran past its soft time limit; the task may catch it and clean up."""


class HardTimeLimitExceeded(Exception):
    """The task ran past its hard time limit and the process running it was killed."""


class TaskCancelled(Exception):
    """The task was cancelled before it started (a Django TaskResult's error for a cancelled task)."""


class WorkerLost(Exception):
    """The process running the task exited before the task returned."""


class InvalidSchedule(SchedulerError):
    """Invalid schedule: {reason}"""


class ScheduleNotFound(SchedulerError):
    """No schedule named {name!r}."""


class ScheduleExists(SchedulerError):
    """A schedule named {name!r} exists already."""


class InvalidWorkflow(SchedulerError):
    """Invalid workflow: {reason}"""


class WorkflowNotFound(SchedulerError):
    """Workflow {id} does not exist."""


class WorkflowNotCancellable(SchedulerError):
    """Workflow {id} is in state {state}: only a running workflow can be cancelled."""


class WorkflowTimeout(SchedulerError):
    """Workflow {id} did not finish within {timeout} s (it is {state})."""
