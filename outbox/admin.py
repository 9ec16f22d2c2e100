"""Admin views of outbox events and half messages: read-only, since the relay and the half-message
protocol own their states; a prepared half message can be committed or rolled back through the
same functions as its producer's."""
from django.contrib import admin, messages

from outbox import half, models
from queueing import exceptions


class ReadOnly:
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class Delivered(admin.SimpleListFilter):
    title = "delivered"
    parameter_name = "delivered"

    def lookups(self, request, model_admin):
        return [("no", "no (the backlog)"), ("yes", "yes")]

    def queryset(self, request, queryset):
        if self.value() in ("no", "yes"):
            return queryset.filter(delivered_at__isnull=self.value() == "no")
        return queryset


@admin.register(models.OutboxEvent)
class OutboxEventAdmin(ReadOnly, admin.ModelAdmin):
    list_display = ["seq", "aggregate_type", "aggregate_id", "event_type", "destination", "created_at",
                    "delivered_at", "attempts", "next_attempt_at", "last_error"]
    list_filter = [Delivered, "aggregate_type", "event_type"]
    search_fields = ["=aggregate_id", "=id"]
    show_full_result_count = False  # delivered events pile up until pruned: no second COUNT(*)
    actions = None


class CheckInline(ReadOnly, admin.TabularInline):
    model = models.HalfMessageCheck
    fields = ["number", "result", "detail", "checked_at"]
    readonly_fields = fields
    extra = 0


@admin.register(models.HalfMessage)
class HalfMessageAdmin(admin.ModelAdmin):
    list_display = ["id", "producer_group", "topic", "state", "check_count", "next_check_at", "created_at",
                    "resolved_at", "resolution"]
    list_filter = ["state", "producer_group"]
    search_fields = ["=id", "producer_group", "topic"]
    inlines = [CheckInline]
    actions = ["commit", "rollback"]

    def get_readonly_fields(self, request, obj=None):
        return [field.name for field in self.model._meta.fields]

    def has_add_permission(self, request):
        return False  # prepared by producers

    def has_delete_permission(self, request, obj=None):
        return False  # resolved by commit or rollback, never deleted

    def save_model(self, request, obj, form, change):
        """Every field is read-only: a save writes nothing (a full-row save could undo a resolution
        the check-back loop made meanwhile)."""

    def _each(self, request, queryset, action, done):
        count = 0
        for message_id in queryset.values_list("id", flat=True):
            try:
                action(message_id, reason=f"{done} in the admin by {request.user.get_username()}")
                count += 1
            except exceptions.QueueingError as error:
                self.message_user(request, str(error), messages.WARNING)
        if count:
            self.message_user(request, f"{count} half message(s) {done}.", messages.SUCCESS)

    @admin.action(description="Commit selected half messages (append them to the log)", permissions=["change"])
    def commit(self, request, queryset):
        self._each(request, queryset, half.commit, "committed")

    @admin.action(description="Roll back selected half messages (discard them)", permissions=["change"])
    def rollback(self, request, queryset):
        self._each(request, queryset, half.rollback, "rolled back")
