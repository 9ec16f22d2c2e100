"""Define tasks with @task and enqueue them: a task queue is a topic, an enqueue is a record in it
(a delayed record for a countdown or an ETA) written with the task's row in one transaction."""
import dataclasses
import datetime
import math
import re

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models.base import ModelState
from django.utils import timezone
from django.utils.module_loading import autodiscover_modules, import_string

from queueing import delayed, exceptions as engine_exceptions, models as engine_models, producer, retries, topics
from scheduler import exceptions, limits, models, storage

TOPIC_PREFIX = "tasks."
# A priority other than 0 has a topic of its own, its band: "tasks-p10.emails", "tasks-p-5.emails".
# No queue's topic starts with "tasks-p", and the band's number ends at the first dot, so the name
# cannot be another queue's topic or another band's.
BAND_PREFIX = "tasks-p"
BAND_NAME = re.compile(r"^tasks-p(?P<priority>-?[0-9]+)\.(?P<queue>.+)$")
MIN_PRIORITY, MAX_PRIORITY = -100, 100  # Django's tasks range
MAX_ATTEMPTS_LIMIT = 1000
ENQUEUE_CHUNK = 250  # enqueue_many writes this many tasks a statement, pipelined  # the engine's largest delivery limit: a task group's own limit is set to it
_registry: dict[str, "Task"] = {}
_discovered = False  # every app's tasks module imported (discover)
_templates: dict[tuple, dict] = {}  # the fields of a new task row (Task._rows), by (name, queue, priority)


def topic_for(queue, priority=0):
    """The topic of a queue's priority band (priority 0: the queue's topic, the name of its share group)."""
    return TOPIC_PREFIX + queue if priority == 0 else f"{BAND_PREFIX}{priority}.{queue}"


def band_of(topic):
    """(queue, priority) of a band's topic name, or None for a name that is not one."""
    match = BAND_NAME.match(topic)
    return (match["queue"], int(match["priority"])) if match else None


def check_priority(priority):
    if isinstance(priority, bool) or not isinstance(priority, int) or not MIN_PRIORITY <= priority <= MAX_PRIORITY:
        raise exceptions.InvalidTask(reason=f"priority must be an integer from {MIN_PRIORITY} to {MAX_PRIORITY}, "
                                            f"not {priority!r}")
    return priority


def check_concurrency(key, limit):
    if not (key is None or isinstance(key, str) or callable(key)):
        raise exceptions.InvalidTask(reason="concurrency_key is a string or a function of (args, kwargs)")
    if (key is None) != (limit is None):
        raise exceptions.InvalidTask(reason="give concurrency_key and concurrency_limit together")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 100_000):
        raise exceptions.InvalidTask(reason=f"concurrency_limit must be an integer from 1 to 100000, not {limit!r}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How a failed task is retried: up to max_attempts runs in all, for the exceptions in retry_on,
    after exponential back-off with jitter (backoff_base_s doubling up to backoff_max_s) or fixed
    levels (backoff_levels_s, the last one repeating)."""

    max_attempts: int = 1
    retry_on: tuple = (Exception,)
    backoff_base_s: float = 1.0
    backoff_max_s: float = 600.0
    backoff_levels_s: tuple = ()

    def __post_init__(self):
        if not isinstance(self.max_attempts, int) or not 1 <= self.max_attempts <= MAX_ATTEMPTS_LIMIT:
            raise exceptions.InvalidTask(reason=f"max_attempts must be 1 to {MAX_ATTEMPTS_LIMIT}")
        if not all(isinstance(c, type) and issubclass(c, BaseException) for c in self.retry_on):
            raise exceptions.InvalidTask(reason="retry_on must be a tuple of exception classes")
        for value in (self.backoff_base_s, self.backoff_max_s, *self.backoff_levels_s):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 366 * 86400:
                raise exceptions.InvalidTask(reason=f"back-off delays are seconds from 0 to a year, not {value!r}")

    def delay(self, attempt):
        """Seconds to wait before the run after failed attempt number attempt (1-based)."""
        policy = retries.Policy(
            delivery_limit=self.max_attempts, backoff="levels" if self.backoff_levels_s else "exponential",
            backoff_base_ms=max(1, int(self.backoff_base_s * 1000)), backoff_max_ms=max(1, int(self.backoff_max_s * 1000)),
            backoff_levels_ms=tuple(int(s * 1000) for s in self.backoff_levels_s), dead_letter_topic="",
        )
        return policy.delay_ms(attempt) / 1000

    def retries(self, error):
        return isinstance(error, self.retry_on)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Task:
    """A registered task. Call enqueue(*args, **kwargs); using(...) overrides options for one call."""

    name: str
    func: object
    queue: str = "default"
    retry: RetryPolicy = RetryPolicy()
    soft_time_limit: float | None = None
    hard_time_limit: float | None = None
    unique_key: object = None  # a string, or a function of (args, kwargs) returning one (or None)
    priority: int = 0
    concurrency_key: object = None  # a string, or a function of (args, kwargs) returning one (or None)
    concurrency_limit: int | None = None
    rate_limit: limits.Rate | None = None
    takes_context: bool = False
    countdown: float | None = None
    eta: datetime.datetime | None = None
    django_task: object = None  # the django.tasks Task this definition was made from, if any
    http: bool = False  # may be submitted over the REST API (by a credential allowed this task)

    @property
    def module(self):
        return self.func.__module__

    def __call__(self, *args, **kwargs):
        """Run the function here and now, as a plain call (no worker, no result row)."""
        return self.func(*args, **kwargs)

    def using(self, *, queue=None, countdown=None, eta=None, unique_key=None, priority=None, concurrency_key=None,
              concurrency_limit=None):
        """Return this task with options changed for the enqueues made through it."""
        changes = {k: v for k, v in (("queue", queue), ("countdown", countdown), ("eta", eta),
                                     ("unique_key", unique_key), ("priority", priority),
                                     ("concurrency_key", concurrency_key),
                                     ("concurrency_limit", concurrency_limit)) if v is not None}
        if "queue" in changes:
            check_queue(changes["queue"])
        if "priority" in changes:
            check_priority(changes["priority"])
        if concurrency_key is not None or concurrency_limit is not None:
            check_concurrency(changes.get("concurrency_key", self.concurrency_key),
                              changes.get("concurrency_limit", self.concurrency_limit))
        return dataclasses.replace(self, **changes)

    def s(self, *args, **kwargs):
        """A signature: this call, not yet enqueued, for a chain, group or chord (scheduler.workflows).
        In a chain it gets the previous step's result as its first argument. Raises NotJSON."""
        from scheduler import workflows

        return workflows.Signature(self, args, kwargs)

    def si(self, *args, **kwargs):
        """An immutable signature: in a chain it does not get the previous step's result."""
        from scheduler import workflows

        return workflows.Signature(self, args, kwargs, immutable=True)

    def enqueue(self, *args, **kwargs):
        """Enqueue one run; return its Result handle.

        Commits with the caller's transaction when there is one. Raises NotJSON for arguments that
        are not JSON, AlreadyEnqueued when the unique key is taken by a task still to finish.
        """
        from scheduler import results

        due = self._due()
        if due is not None:
            return self.enqueue_many([(args, kwargs)])[0]
        # The row and its record in one statement, in the caller's transaction or, without one, as
        # a transaction of its own (one round trip); a taken unique key writes nothing, so no
        # savepoint is needed to keep the caller's transaction usable.
        row = self._rows([(list(args), dict(kwargs))], None)[0]
        written = storage.enqueue_task(row, ensure_queue(self.queue, self.priority).name)
        if not written:
            raise exceptions.AlreadyEnqueued(unique_key=row.unique_key)
        return results.Result(row)

    def enqueue_many(self, calls, *, steps=None):
        """Enqueue many runs at once: calls are (args, kwargs) pairs, all checked before anything is
        written. The rows and their records go ENQUEUE_CHUNK tasks a statement, pipelined, to one
        partition, in one transaction (the caller's, if any). Returns their Results.

        steps, from scheduler.workflows only: each call's workflow step ({"workflow", "step"}),
        carried in its record so that the worker's outcome transaction advances the workflow.
        """
        from scheduler import results

        due = self._due()
        calls = self._checked([(list(a), dict(k)) for a, k in calls])
        if not calls:
            return []
        topic = ensure_queue(self.queue, self.priority).name
        rows = []
        try:
            # A savepoint only where a unique key may be taken: to raise AlreadyEnqueued with the
            # caller's transaction still usable. Without one nothing here can conflict.
            unique = any(unique_key is not None for _, _, unique_key, _ in calls)
            with transaction.atomic(savepoint=unique):
                if due is None and steps is None:
                    storage.enqueue_many(self._chunks(calls, rows), topic, self.name)
                else:
                    rows = self._build(calls, due)
                    storage.insert_results(rows)
                    send_records(rows, due, steps=steps)
        except IntegrityError as error:
            if "task_unique_key_active" in str(error):
                raise exceptions.AlreadyEnqueued(unique_key=_taken_key(error, rows)) from None
            raise
        return [results.Result(row) for row in rows]

    def _chunks(self, calls, rows):
        """The rows of checked calls, made ENQUEUE_CHUNK at a time as they are asked for (the
        database writes a chunk while the next is made), each also added to rows."""
        for start in range(0, len(calls), ENQUEUE_CHUNK):
            chunk = self._build(calls[start:start + ENQUEUE_CHUNK], None)
            rows.extend(chunk)
            yield chunk

    def _rows(self, calls, due):
        """The new TaskResult rows (not saved) of (args, kwargs) calls; raises NotJSON, InvalidTask."""
        return self._build(self._checked(calls), due)

    def _checked(self, calls):
        """Check (args, kwargs) calls before anything is written; return (args, kwargs, unique key,
        concurrency key) of each. Raises NotJSON, InvalidTask."""
        checked = []
        for args, kwargs in calls:
            if args:
                check_json(args, what="arguments", task=self.name)
            if kwargs:
                check_json(kwargs, what="arguments", task=self.name)
            unique_key = self._unique_key(args, kwargs) if self.unique_key is not None else None
            concurrency_key = self._concurrency_key(args, kwargs) if self.concurrency_key is not None else None
            checked.append((args, kwargs, unique_key, concurrency_key))
        return checked

    def _build(self, calls, due):
        """The new TaskResult rows (not saved) of checked calls."""
        # The rows copy the fields of one model instance built the ordinary way, kept per task, and
        # get a fresh ModelState: Django's Model.__init__ (defaults of some 30 fields) was most of a
        # bulk enqueue's Python time and a fifth of a single enqueue's. The copied defaults are
        # immutable but for args and kwargs, which every row replaces.
        template = (self.name, self.queue, self.priority)
        fields = _templates.get(template)
        if fields is None:
            fields = models.TaskResult(task_name=self.name, queue=self.queue, state=models.State.QUEUED,
                                       priority=self.priority).__dict__
            _templates[template] = fields
        rows = []
        new, new_id, state = models.TaskResult.__new__, models.new_task_id, models.State.SCHEDULED if due else None
        for args, kwargs, unique_key, concurrency_key in calls:
            row = new(models.TaskResult)
            row.__dict__.update(fields)
            row._state = ModelState()
            row.id, row.args, row.kwargs = new_id(), args, kwargs
            if state is not None:
                row.state, row.eta = state, due
            if unique_key is not None:
                row.unique_key = unique_key
            if concurrency_key is not None:
                row.concurrency_key, row.concurrency_limit = concurrency_key, self.concurrency_limit
            rows.append(row)
        return rows

    def _due(self):
        if self.countdown is not None and self.eta is not None:
            raise exceptions.InvalidTask(reason="give a countdown or an eta, not both")
        try:
            if self.countdown is not None:
                return delayed.deliver_at_for(delay=self.countdown) if self.countdown > 0 else None
            if self.eta is not None:
                return self.eta if self.eta > timezone.now() else None
        except engine_exceptions.InvalidArgument as error:
            raise exceptions.InvalidTask(reason=error.data.get("reason", str(error))) from None
        except TypeError:
            raise exceptions.InvalidTask(reason="countdown is seconds; eta an aware datetime") from None
        return None

    def _unique_key(self, args, kwargs):
        key = self.unique_key(args, kwargs) if callable(self.unique_key) else self.unique_key
        if key is not None and (not isinstance(key, str) or not 1 <= len(key) <= 255):
            raise exceptions.InvalidTask(reason="a unique key is a string of 1 to 255 characters")
        return key

    def _concurrency_key(self, args, kwargs):
        key = self.concurrency_key(args, kwargs) if callable(self.concurrency_key) else self.concurrency_key
        if key is not None and (not isinstance(key, str) or not 1 <= len(key) <= 255):
            raise exceptions.InvalidTask(reason="a concurrency key is a string of 1 to 255 characters")
        return key


def _taken_key(error, rows):
    """The unique key PostgreSQL found taken ("Key (unique_key)=(k) already exists.")."""
    detail = getattr(getattr(error.__cause__, "diag", None), "message_detail", None) or ""
    match = re.match(r"Key \(unique_key\)=\((?P<key>.*)\) already exists", detail)
    if match:
        return match["key"]
    return next((r.unique_key for r in rows if r.unique_key), None)


def send_records(rows, due, *, steps=None):
    """Append one record per task (its id) to its queue's band topic, or schedule it for its due time.
    steps (workflows only) are the rows' workflow steps, in order, carried in their records."""
    by_topic = {}
    for row, step in zip(rows, steps or [None] * len(rows)):
        value = {"id": str(row.id), "task": row.task_name, "generation": row.generation, **(step or {})}
        by_topic.setdefault(topic_for(row.queue, row.priority), []).append((row, value))
    for name, batch in by_topic.items():
        values = [value for _, value in batch]
        if due is None:
            producer.send_batch(name, values)
            continue
        waiting = producer.send_batch(name, values, deliver_at=due)
        for (row, _), meta in zip(batch, waiting):
            row.delayed_id = meta.id
    if due is not None:
        models.TaskResult.objects.bulk_update(rows, ["delayed_id"])


def bands(queue):
    """The topics of a queue's priority bands in use, highest priority first (band 0 always)."""
    found = {0: topic_for(queue)}
    names = engine_models.Topic.objects.filter(name__startswith=BAND_PREFIX).values_list("name", flat=True)
    for name in names:
        band = band_of(name)
        if band is not None and band[0] == queue:
            found[band[1]] = name
    return [found[p] for p in sorted(found, reverse=True)]


def ensure_queue(queue, priority=0):
    """Return the TopicInfo of a queue's topic (of its priority band), creating the topic on first use."""
    name = topic_for(queue, priority)
    try:
        return topics.cached_topic(name)
    except engine_exceptions.TopicNotFound:
        try:
            with transaction.atomic():
                # A task's record is needed only until a worker settles it: a retention keeps the log
                # of a busy queue from growing for ever (whole segments are dropped, no bloat).
                return topics.create_topic(name, partitions=settings.SLUICE["TASK_PARTITIONS"],
                                           retention_ms=settings.SLUICE["TASK_TOPIC_RETENTION_MS"])
        except engine_exceptions.TopicExists:
            return topics.get_topic(name)


def check_json(value, *, what, task):
    """Raise NotJSON unless value is made of dicts with string keys, lists, tuples, strings, finite
    numbers, booleans and None (what json round-trips without changing meaning)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if item is None or isinstance(item, (str, bool, int)):
            continue
        if isinstance(item, float):
            if not math.isfinite(item):
                raise exceptions.NotJSON(what=what, task=task, reason=f"{item!r} is not a finite number")
            continue
        if isinstance(item, (list, tuple)):
            stack.extend(item)
            continue
        if isinstance(item, dict):
            bad = [k for k in item if not isinstance(k, str)]
            if bad:
                raise exceptions.NotJSON(what=what, task=task, reason=f"the key {bad[0]!r} is not a string")
            stack.extend(item.values())
            continue
        raise exceptions.NotJSON(what=what, task=task, reason=f"{type(item).__name__} {item!r:.80} is not JSON")


def check_queue(queue):
    if not isinstance(queue, str) or not queue:
        raise exceptions.InvalidTask(reason="a queue name is a non-empty string")
    try:
        topics.validate_name(topic_for(queue, MIN_PRIORITY))  # the longest of its bands' names
    except engine_exceptions.InvalidTopicName:
        raise exceptions.InvalidTask(reason=f"invalid queue name {queue!r}: use a-z, A-Z, 0-9, '.', '_' and '-'") from None


def _exception_classes(retry_on):
    """retry_on as a tuple: one exception class, or an iterable of them (RetryPolicy checks each)."""
    if isinstance(retry_on, type):
        return (retry_on,)
    try:
        return tuple(retry_on)
    except TypeError:
        raise exceptions.InvalidTask(reason="retry_on must be a tuple of exception classes") from None


def task(function=None, *, name=None, queue="default", max_attempts=1, retry_on=(Exception,), backoff_base_s=1.0,
         backoff_max_s=600.0, backoff_levels_s=(), soft_time_limit=None, hard_time_limit=None, unique_key=None,
         takes_context=False, priority=0, concurrency_key=None, concurrency_limit=None, rate_limit=None, http=False):
    """Register a function as a task: `@task` or `@task(queue="emails", max_attempts=5)`.

    name defaults to the function's dotted path. The worker runs it in a child process; a failure
    in retry_on is retried up to max_attempts runs in all, after the back-off. soft_time_limit
    raises SoftTimeLimitExceeded inside the task; hard_time_limit (seconds) kills the process
    running it. With takes_context=True the function gets a TaskContext first (its id, attempt,
    progress() and the abort checks). priority (-100 to 100, higher first) orders the tasks of a
    queue; at most concurrency_limit tasks with the same concurrency_key (a string, or a function
    of (args, kwargs)) run at once; rate_limit ("10/s", "100/m", "1000/h") bounds the starts of
    this task in any window of that length. All across every worker. http=True lets the REST API
    submit it (POST /api/v1/tasks/), for a credential allowed this task; no other task can be.
    """
    def register(func):
        check_queue(queue)
        check_priority(priority)
        check_concurrency(concurrency_key, concurrency_limit)
        rate = limits.parse_rate(rate_limit) if rate_limit is not None else None
        for limit in (soft_time_limit, hard_time_limit):
            if limit is not None and (not isinstance(limit, (int, float)) or limit <= 0):
                raise exceptions.InvalidTask(reason="time limits are positive numbers of seconds")
        if soft_time_limit is not None and hard_time_limit is not None and soft_time_limit >= hard_time_limit:
            raise exceptions.InvalidTask(reason="soft_time_limit must be shorter than hard_time_limit "
                                                "(the process is killed at the hard one)")
        if not (unique_key is None or isinstance(unique_key, str) or callable(unique_key)):
            raise exceptions.InvalidTask(reason="unique_key is a string or a function of (args, kwargs)")
        definition = Task(
            name=name or f"{func.__module__}.{func.__qualname__}", func=func, queue=queue,
            retry=RetryPolicy(max_attempts=max_attempts, retry_on=_exception_classes(retry_on),
                              backoff_base_s=backoff_base_s,
                              backoff_max_s=backoff_max_s, backoff_levels_s=tuple(backoff_levels_s)),
            soft_time_limit=soft_time_limit, hard_time_limit=hard_time_limit, unique_key=unique_key,
            takes_context=takes_context, priority=priority, concurrency_key=concurrency_key,
            concurrency_limit=concurrency_limit, rate_limit=rate, http=bool(http),
        )
        if len(definition.name) > 255:
            raise exceptions.InvalidTask(reason="a task name has at most 255 characters")
        known = _registry.get(definition.name)
        if known is not None and known.module != definition.module:
            raise exceptions.InvalidTask(reason=f"task {definition.name!r} is defined twice")
        _registry[definition.name] = definition
        return definition

    return register(function) if function is not None else register


def discover():
    """Import every installed app's tasks module, once a process: the worker asks for the registry
    at every batch, and autodiscover_modules looks every app up again each time."""
    global _discovered
    if not _discovered:
        autodiscover_modules("tasks")
        _discovered = True


def get(name):
    """The registered task of that name, or the Django task (django.tasks) at that dotted path;
    raise TaskNotRegistered."""
    try:
        return _registry[name]
    except KeyError:
        discover()
    if name not in _registry:
        found = _django_task(name)
        if found is None:
            raise exceptions.TaskNotRegistered(name=name)
        _registry[name] = Task(name=name, func=found.func, queue=found.queue_name,
                               takes_context=found.takes_context, django_task=found)
    return _registry[name]


def http_task(name):
    """The registered task of that name marked http=True; raise TaskNotRegistered for any other name.
    Nothing is imported by name: only tasks already registered by their apps' tasks modules count."""
    found = registered().get(name) if isinstance(name, str) else None
    if found is None or not found.http:
        raise exceptions.TaskNotRegistered(name=name)
    return found


def _django_task(path):
    """The django.tasks Task at a dotted path (a module's decorated function), or None."""
    from django.tasks import Task as DjangoTask

    try:
        found = import_string(path)
    except ImportError:
        return None
    return found if isinstance(found, DjangoTask) else None


def registered(queue=None):
    """The registered tasks (of one queue), by name."""
    discover()
    return {n: t for n, t in _registry.items() if queue is None or t.queue == queue}
