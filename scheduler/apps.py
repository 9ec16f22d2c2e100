"""App configuration for the task layer: tasks, their results, and the workers that run them."""
from django.apps import AppConfig


class SchedulerConfig(AppConfig):
    name = "scheduler"
    verbose_name = "Tasks"
    default_auto_field = "django.db.models.BigAutoField"
