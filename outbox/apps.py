"""App configuration for transactional messaging: outbox, half messages, inbox."""
from django.apps import AppConfig


class OutboxConfig(AppConfig):
    name = "outbox"
    verbose_name = "Transactional messaging"
    default_auto_field = "django.db.models.BigAutoField"
