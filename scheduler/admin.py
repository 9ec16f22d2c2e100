"""Admin views of tasks and their attempts (read-only), with cancel and retry as actions."""
from django.contrib import admin, messages

from scheduler import control, exceptions, models


class ActionOnEach:
    """Admin actions that call a control function with each selected row's key (action_key), one
    warning per row it refuses and one line for those it did."""

    action_key, action_noun = "id", "task"

    def _each(self, request, queryset, action, done):
        count = 0
        for key in queryset.values_list(self.action_key, flat=True):
            try:
                action(key)
                count += 1
            except exceptions.SchedulerError as error:
                self.message_user(request, str(error), messages.WARNING)
        if count:
            self.message_user(request, f"{count} {self.action_noun}(s) {done}.", messages.SUCCESS)


class AttemptInline(admin.TabularInline):
    model = models.TaskAttempt
    fields = ["number", "worker", "started_at", "ended_at", "outcome", "error_class", "error_message"]
    readonly_fields = fields
    extra = 0
    can_delete = False


@admin.register(models.TaskResult)
class TaskResultAdmin(ActionOnEach, admin.ModelAdmin):
    list_display = ["id", "task_name", "queue", "state", "attempts", "enqueued_at", "finished_at"]
    list_filter = ["state", "queue"]
    search_fields = ["=id", "task_name", "unique_key"]
    date_hierarchy = "enqueued_at"
    inlines = [AttemptInline]
    actions = ["cancel", "retry"]

    def get_readonly_fields(self, request, obj=None):
        return [field.name for field in self.model._meta.fields]

    def has_add_permission(self, request):
        return False  # tasks are enqueued by code

    def has_delete_permission(self, request, obj=None):
        # A row deleted under a running task or a workflow breaks them: tasks are cancelled (an
        # action) and pruned once finished (`tasks prune`), never deleted here.
        return False

    @admin.action(description="Cancel selected tasks (those not started)", permissions=["change"])
    def cancel(self, request, queryset):
        self._each(request, queryset, control.cancel, "cancelled")

    @admin.action(description="Retry selected tasks (failed or cancelled) now", permissions=["change"])
    def retry(self, request, queryset):
        self._each(request, queryset, control.retry, "queued again")


from scheduler import schedules_admin  # noqa: E402,F401  (periodic schedules' admin)
from scheduler import workflows_admin  # noqa: E402,F401  (workflows' admin)
