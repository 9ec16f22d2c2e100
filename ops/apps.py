"""Operations: `manage.py serve` supervises every role of the platform in one command."""
from django.apps import AppConfig


class OpsConfig(AppConfig):
    name = "ops"
    verbose_name = "Operations"
