"""Admin views of periodic schedules: create and edit them (validated as the Python API does),
enable, disable and run now as actions, their last ticks inline."""
from django import forms
from django.contrib import admin
from django.utils import timezone

from scheduler import admin as task_admin
from scheduler import exceptions, models, schedules


class TickInline(admin.TabularInline):
    model = models.ScheduleTick
    fields = ["tick_at", "fired_at", "trigger", "missed", "task_id", "error"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    ordering = ["-tick_at"]

    def has_add_permission(self, request, obj=None):
        return False

    def get_queryset(self, request):
        return super().get_queryset(request).order_by("-tick_at")


class ScheduleForm(forms.ModelForm):
    class Meta:
        model = models.Schedule
        fields = ["name", "task_name", "args", "kwargs", "kind", "cron", "interval", "at", "timezone", "enabled",
                  "catch_up", "catch_up_limit", "tick_kwarg"]

    def clean(self):
        data = super().clean()
        if self.errors:
            return data
        kind = data.get("kind")
        timing = {"cron": {"cron": data.get("cron")}, "interval": {"every": data.get("interval"), "at": data.get("at")},
                  "once": {"at": data.get("at")}}.get(kind, {})
        try:
            self.built = schedules.build(
                name=data["name"], task=data["task_name"], args=data.get("args") or [], kwargs=data.get("kwargs") or {},
                timezone=data.get("timezone") or "UTC", catch_up=data.get("catch_up"),
                catch_up_limit=data.get("catch_up_limit"), tick_kwarg=data.get("tick_kwarg"),
                enabled=data.get("enabled"), **timing)
        except exceptions.SchedulerError as error:
            raise forms.ValidationError(str(error)) from None
        return data


@admin.register(models.Schedule)
class ScheduleAdmin(task_admin.ActionOnEach, admin.ModelAdmin):
    action_key, action_noun = "name", "schedule"
    form = ScheduleForm
    list_display = ["name", "task_name", "kind", "cron", "interval", "timezone", "enabled", "catch_up", "next_run_at",
                    "last_tick_at", "source"]
    list_filter = ["enabled", "kind", "source"]
    search_fields = ["name", "task_name"]
    readonly_fields = ["next_run_at", "last_tick_at", "last_task_id", "source"]
    inlines = [TickInline]
    actions = ["enable", "disable", "run_now"]

    def save_model(self, request, obj, form, change):
        built = form.built
        old = models.Schedule.objects.filter(pk=obj.pk).first() if change else None
        obj.at = built.at  # an interval without a first tick gets one
        retimed = old is None or any(getattr(old, f) != getattr(built, f) for f in schedules.TIMING)
        if retimed or (obj.enabled and not old.enabled):
            obj.next_run_at = built.next_run_at
        obj.updated_at = timezone.now()
        super().save_model(request, obj, form, change)

    @admin.action(description="Enable selected schedules", permissions=["change"])
    def enable(self, request, queryset):
        self._each(request, queryset, schedules.enable, "enabled")

    @admin.action(description="Disable selected schedules", permissions=["change"])
    def disable(self, request, queryset):
        self._each(request, queryset, schedules.disable, "disabled")

    @admin.action(description="Run selected schedules' tasks now", permissions=["change"])
    def run_now(self, request, queryset):
        self._each(request, queryset, schedules.run_now, "run now")

