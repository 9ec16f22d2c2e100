"""Admin views of topics, partitions, groups and offset resets (read-mostly)."""
from django.contrib import admin

from queueing import models


class PartitionInline(admin.TabularInline):
    model = models.Partition
    fields = ["number", "log_start_offset", "next_offset", "size_bytes"]
    readonly_fields = fields
    extra = 0
    can_delete = False


@admin.register(models.Topic)
class TopicAdmin(admin.ModelAdmin):
    list_display = ["name", "partition_count", "retention_ms", "retention_bytes", "max_message_bytes", "created_at"]
    search_fields = ["name"]
    readonly_fields = ["name", "partition_count", "created_at"]
    inlines = [PartitionInline]

    def has_add_permission(self, request):
        # Topics are created with their partitions by `manage.py topics create` or the API.
        return False


class MemberInline(admin.TabularInline):
    model = models.GroupMember
    fields = ["id", "client_id", "host", "topics", "last_heartbeat"]
    readonly_fields = fields
    extra = 0
    can_delete = False


@admin.register(models.ConsumerGroup)
class ConsumerGroupAdmin(admin.ModelAdmin):
    list_display = ["name", "generation", "rebalanced_at", "created_at"]
    search_fields = ["name"]
    readonly_fields = ["name", "generation", "rebalanced_at", "created_at"]
    inlines = [MemberInline]


@admin.register(models.OffsetReset)
class OffsetResetAdmin(admin.ModelAdmin):
    list_display = ["created_at", "group_name", "topic_name", "partition", "before", "after", "scenario", "actor"]
    list_filter = ["group_name"]

    def has_change_permission(self, request, obj=None):
        return False

    def has_add_permission(self, request):
        return False
