"""Admin views of workflows (read-only): the list, one with its steps inline, cancel as an action."""
from django.contrib import admin

from scheduler import admin as task_admin
from scheduler import models, workflows


class StepInline(admin.TabularInline):
    model = models.WorkflowStep
    fk_name = "workflow"
    fields = ["path", "kind", "task_name", "task_id", "state", "result", "started_at", "finished_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(models.Workflow)
class WorkflowAdmin(task_admin.ActionOnEach, admin.ModelAdmin):
    list_display = ["id", "description", "state", "created_at", "finished_at"]
    list_filter = ["state"]
    search_fields = ["=id", "description"]
    date_hierarchy = "created_at"
    inlines = [StepInline]
    actions = ["cancel"]
    action_noun = "workflow"

    def get_readonly_fields(self, request, obj=None):
        return [field.name for field in self.model._meta.fields]

    def has_add_permission(self, request):
        return False  # workflows are enqueued by code

    def has_delete_permission(self, request, obj=None):
        return False  # cancelled (an action) and pruned once finished, never deleted under their tasks

    @admin.action(description="Cancel selected workflows (their tasks not started)", permissions=["change"])
    def cancel(self, request, queryset):
        self._each(request, queryset, workflows.cancel, "cancelled")
