"""Tables of the kombu transport: its queues (each a topic with a share group) and the exchange
bindings every process routes by."""
from django.db import models


class KombuQueue(models.Model):
    """A kombu queue: its topic, and AMQP's x-expires and x-message-ttl if it was declared with them.

    last_used moves on each declaration and while a consumer reads the queue; a queue with expires
    unused for longer is deleted (pidbox reply queues, event receivers' queues).
    """

    name = models.CharField(max_length=1000, unique=True)
    topic = models.CharField(max_length=249)
    expires_ms = models.PositiveBigIntegerField(null=True, blank=True)
    message_ttl_ms = models.PositiveBigIntegerField(null=True, blank=True)
    declared_at = models.DateTimeField(auto_now_add=True)
    last_used = models.DateTimeField()

    class Meta:
        verbose_name = "kombu queue"

    def __str__(self):
        return self.name


class KombuBinding(models.Model):
    """A queue bound to an exchange: what kombu's virtual exchanges route by, shared by every process
    (kombu keeps bindings in each process's memory otherwise, so a publisher would drop what a
    consumer in another process bound)."""

    exchange = models.CharField(max_length=255)
    exchange_type = models.CharField(max_length=16)  # direct, topic or fanout
    routing_key = models.CharField(max_length=255, blank=True)
    pattern = models.CharField(max_length=1000, blank=True)  # a topic exchange's regular expression
    queue = models.CharField(max_length=1000)

    class Meta:
        verbose_name = "kombu binding"
        constraints = [
            models.UniqueConstraint(fields=["exchange", "routing_key", "queue"], name="kombu_binding_unique"),
        ]
        indexes = [models.Index(fields=["queue"], name="kombu_binding_queue")]

    def __str__(self):
        return f"{self.exchange} --{self.routing_key}--> {self.queue}"


# The Celery result backend (celery_backend, celery_store): a row per task, per saved group and per
# chord. Celery's ids are any strings and its states any names (update_state(state="PROGRESS")),
# and a result is encoded by the app's result_serializer, so these are tables of their own rather
# than the task layer's TaskResult.


class CeleryTaskResult(models.Model):
    """A Celery task's latest state and its meta (result, traceback, children) as the backend
    encoded it; a SUCCESS is never overwritten (a redelivered task's STARTED would hide it)."""

    task_id = models.CharField(max_length=255, unique=True)
    status = models.CharField(max_length=50)
    task_name = models.CharField(max_length=255, blank=True)
    group_id = models.CharField(max_length=255, blank=True)
    content_type = models.CharField(max_length=128)
    meta = models.BinaryField(help_text="status, result, traceback and children, in the result serializer's encoding")
    traceback = models.TextField(blank=True)
    updated_at = models.DateTimeField()
    date_done = models.DateTimeField(null=True, blank=True, help_text="when it reached a ready state")

    class Meta:
        verbose_name = "Celery task result"
        indexes = [
            # cleanup() deletes the oldest finished results.
            models.Index(fields=["date_done"], name="celery_result_done", condition=models.Q(date_done__isnull=False)),
        ]

    def __str__(self):
        return f"{self.task_id} {self.status}"


class CeleryGroupResult(models.Model):
    """A saved GroupResult (GroupResult.save(), and every chord's header): its members' ids."""

    group_id = models.CharField(max_length=255, unique=True)
    content_type = models.CharField(max_length=128)
    meta = models.BinaryField()
    saved_at = models.DateTimeField()

    class Meta:
        verbose_name = "Celery group result"
        indexes = [models.Index(fields=["saved_at"], name="celery_group_saved")]

    def __str__(self):
        return self.group_id


class CeleryChord(models.Model):
    """A chord waiting for its header: how many members it has, and when its callback was sent
    (set once, by the member whose completion made the count, in the callback's transaction)."""

    group_id = models.CharField(max_length=255, unique=True)
    size = models.IntegerField()
    created_at = models.DateTimeField()
    fired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "Celery chord"

    def __str__(self):
        return self.group_id


class CeleryChordPart(models.Model):
    """A finished member of a chord's header, counted once however often it ran (a task redelivered
    after its worker died reports its end again)."""

    chord = models.ForeignKey(CeleryChord, on_delete=models.CASCADE, related_name="parts")
    task_id = models.CharField(max_length=255)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["chord", "task_id"], name="celery_chord_part_once")]


# The Celery beat scheduler (celery_beat, beat_store): Celery's periodic tasks, their sent ticks, and
# the lease the active beat holds. The timing fields are the task layer's Schedule's (kind, cron,
# interval, at, timezone), so scheduler/cron.py computes their ticks.


class CeleryPeriodicTask(models.Model):
    """A Celery periodic task: from the app's beat_schedule (source code) or made in the admin."""

    class Kind(models.TextChoices):
        CRON = "cron", "cron expression"
        INTERVAL = "interval", "fixed interval"

    class Source(models.TextChoices):
        CODE = "code", "the app's beat_schedule"
        DATABASE = "database", "created in the database"

    name = models.CharField(max_length=200, unique=True)
    task = models.CharField(max_length=255, help_text="the Celery task's name")
    args = models.JSONField(default=list, blank=True)
    kwargs = models.JSONField(default=dict, blank=True)
    options = models.JSONField(default=dict, blank=True, help_text="apply_async options: queue, priority, expires...")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    cron = models.CharField(max_length=200, blank=True, help_text="five fields, or six with seconds first")
    interval = models.DurationField(null=True, blank=True)
    at = models.DateTimeField(null=True, blank=True, help_text="an interval's first tick (ticks are at + k × interval)")
    timezone = models.CharField(max_length=64, default="UTC", help_text="an IANA time zone (for cron)")
    enabled = models.BooleanField(default=True)
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.DATABASE)
    next_run_at = models.DateTimeField(null=True, blank=True, help_text="the next tick, in UTC")
    last_run_at = models.DateTimeField(null=True, blank=True, help_text="the last tick sent")
    total_run_count = models.IntegerField(default=0)

    class Meta:
        verbose_name = "Celery periodic task"
        ordering = ["name"]
        indexes = [models.Index(fields=["next_run_at"], name="celery_periodic_due", condition=models.Q(enabled=True))]

    def __str__(self):
        return self.name


class CeleryBeatTick(models.Model):
    """One tick of a periodic task, sent; unique per (task, tick time), so no tick is sent twice
    whatever the number of beats, and in the transaction that sends it (on a Sluice broker)."""

    periodic_task = models.ForeignKey(CeleryPeriodicTask, on_delete=models.CASCADE, related_name="ticks")
    tick_at = models.DateTimeField()
    sent_at = models.DateTimeField()
    task_id = models.CharField(max_length=255)
    beat = models.CharField(max_length=255, help_text="the beat that sent it")

    class Meta:
        ordering = ["periodic_task", "-tick_at"]
        constraints = [models.UniqueConstraint(fields=["periodic_task", "tick_at"], name="celery_beat_tick_once")]


class CeleryBeatLease(models.Model):
    """Which beat is the active one, until when: renewed by its every tick, taken over by a standby
    once it lapses."""

    name = models.CharField(max_length=200, primary_key=True)
    holder = models.CharField(max_length=255)
    acquired_at = models.DateTimeField()
    expires_at = models.DateTimeField()

    class Meta:
        verbose_name = "Celery beat lease"

    def __str__(self):
        return f"{self.name}: {self.holder}"
