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
