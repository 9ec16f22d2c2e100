"""Admin of the Celery compatibility tables, all read-only: the kombu transport's queues and the
exchange bindings routed by (kombu declares them; their backlog is the topic's and share group's of
the same name), and the result backend's results, groups and chords (Celery writes them)."""
from django.contrib import admin

from scheduler.compat import models


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
