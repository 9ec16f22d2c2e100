"""Admin of the Celery compatibility tables. Read-only: the kombu transport's queues and the
exchange bindings routed by (kombu declares them; their backlog is the topic's and share group's of
the same name), and the result backend's results, groups and chords (Celery writes them). Editable:
the beat scheduler's periodic tasks."""
from django import forms
from django.contrib import admin
from django.utils import timezone

from scheduler import exceptions
from scheduler.compat import beat_store, models


class ReadOnly(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(models.KombuQueue)
class KombuQueueAdmin(ReadOnly):
    list_display = ["name", "topic", "expires_ms", "message_ttl_ms", "last_used"]
    search_fields = ["name", "topic"]


@admin.register(models.KombuBinding)
class KombuBindingAdmin(ReadOnly):
    list_display = ["exchange", "exchange_type", "routing_key", "queue"]
    list_filter = ["exchange_type"]
    search_fields = ["exchange", "queue", "routing_key"]


@admin.register(models.CeleryTaskResult)
class CeleryTaskResultAdmin(ReadOnly):
    list_display = ["task_id", "task_name", "status", "date_done", "updated_at"]
    list_filter = ["status"]
    search_fields = ["task_id", "task_name", "group_id"]
    exclude = ["meta"]


@admin.register(models.CeleryGroupResult)
class CeleryGroupResultAdmin(ReadOnly):
    list_display = ["group_id", "saved_at"]
    search_fields = ["group_id"]
    exclude = ["meta"]


@admin.register(models.CeleryChord)
class CeleryChordAdmin(ReadOnly):
    list_display = ["group_id", "size", "created_at", "fired_at"]
    search_fields = ["group_id"]


class CeleryPeriodicTaskForm(forms.ModelForm):
    class Meta:
        model = models.CeleryPeriodicTask
        fields = ["name", "task", "args", "kwargs", "options", "kind", "cron", "interval", "timezone", "enabled"]

    def clean(self):
        cleaned = super().clean()
        row = models.CeleryPeriodicTask(**{field: cleaned.get(field) for field in beat_store.TIMING})
        try:
            beat_store.check(row)
        except exceptions.InvalidSchedule as error:
            raise forms.ValidationError(str(error)) from None
        return cleaned


@admin.register(models.CeleryPeriodicTask)
class CeleryPeriodicTaskAdmin(admin.ModelAdmin):
    """Editable: a change of timing (or a new periodic task) gets its first tick from now; the
    active beat sees it at its next look (within a third of its lease)."""

    form = CeleryPeriodicTaskForm
    list_display = ["name", "task", "kind", "cron", "interval", "enabled", "next_run_at", "last_run_at",
                    "total_run_count", "source"]
    list_filter = ["enabled", "kind", "source"]
    search_fields = ["name", "task"]
    readonly_fields = ["source", "next_run_at", "last_run_at", "total_run_count"]

    def save_model(self, request, obj, form, change):
        if not change or any(field in form.changed_data for field in beat_store.TIMING):
            beat_store.retime(obj, timezone.now())
        super().save_model(request, obj, form, change)


@admin.register(models.CeleryBeatTick)
class CeleryBeatTickAdmin(ReadOnly):
    list_display = ["periodic_task", "tick_at", "sent_at", "task_id", "beat"]
    list_filter = ["periodic_task"]


@admin.register(models.CeleryBeatLease)
class CeleryBeatLeaseAdmin(ReadOnly):
    list_display = ["name", "holder", "acquired_at", "expires_at"]
