"""Admin of the kombu transport's tables: its queues and the exchange bindings routed by (read-only:
kombu declares them; their backlog is the topic's and share group's of the same name)."""
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
