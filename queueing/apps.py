"""App configuration for the queue engine."""
from django.apps import AppConfig


class QueueingConfig(AppConfig):
    name = "queueing"
    verbose_name = "Queue engine"
    default_auto_field = "django.db.models.BigAutoField"
