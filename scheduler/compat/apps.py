"""App configuration of the compatibility layers: their tables, kombu's `sluice` transport alias
and Celery's `sluice` result backend alias."""
from django.apps import AppConfig


class CompatConfig(AppConfig):
    name = "scheduler.compat"
    label = "compat"
    verbose_name = "Celery and kombu compatibility"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # kombu has no entry point for transports: `broker_url = "sluice://"` resolves only once
        # the alias is in TRANSPORT_ALIASES, in the process that connects.
        from scheduler.compat import celery_backend, kombu_transport

        kombu_transport.register()
        # Without an installed Sluice (its celery.result_backends entry point), the same for results.
        celery_backend.register()
