"""App configuration for the task layer: tasks, their results, and the workers that run them."""
from django.apps import AppConfig


class SchedulerConfig(AppConfig):
    name = "scheduler"
    verbose_name = "Tasks"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # Django registers its tasks framework's system check (each TASKS backend's check(): ours
        # refuses a QUEUES name Sluice cannot make a topic of, sluice.E101) only when django.tasks is
        # imported, which `manage.py check` alone does not do.
        import django.tasks  # noqa: F401
