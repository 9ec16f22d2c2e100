"""Admin views of the engine: every change goes through the engine's own functions, with their
refusals; what editing would break (the log, attempts, the offset-reset audit trail) is read-only."""
from django import forms
from django.contrib import admin, messages
from django.contrib.admin import actions as admin_actions
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count, F, IntegerField, OuterRef, Subquery, Sum, Value
from django.db.models.functions import Coalesce, Greatest
from django.shortcuts import redirect
from django.urls import reverse

from queueing import delayed, exceptions, groups, models, retries, share, topics

POLICY_FIELDS = ["delivery_limit", "backoff", "backoff_base_ms", "backoff_max_ms", "backoff_levels_ms",
                 "dead_letter_topic"]


class ReadOnly:
    """Shown, never added, changed or deleted here."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class EngineForm(forms.ModelForm):
    """A change form that applies its changed fields through the engine (engine_save) once they are
    valid, so an engine refusal is shown on the form and nothing is stored; the admin's own save is
    skipped."""

    backoff_levels_ms = forms.CharField(required=False, help_text="delays in ms for attempts 1, 2, ... "
                                        "separated by commas (used with back-off 'levels')")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        levels = getattr(self.instance, "backoff_levels_ms", None)
        if "backoff_levels_ms" in self.fields:
            self.initial["backoff_levels_ms"] = ",".join(str(v) for v in levels or ())

    def clean_backoff_levels_ms(self):
        text = (self.cleaned_data.get("backoff_levels_ms") or "").strip()
        try:
            return [int(v) for v in text.split(",")] if text else None
        except ValueError:
            raise ValidationError("whole numbers of milliseconds separated by commas") from None

    def _post_clean(self):
        # After the form's and the model's own validation, so the engine's change is the last step
        # and a form shown with errors has stored nothing.
        super()._post_clean()
        if self.errors:
            return
        changes = {field: self.cleaned_data.get(field) for field in self.changed_data}
        emptied = [field for field, value in changes.items() if value in (None, "")]
        for field in emptied:
            self.add_error(field, "cannot be emptied here; set a value")
        if emptied or not changes:
            return
        try:
            self.engine_save(self.instance, changes)
        except exceptions.QueueingError as error:
            self.add_error(None, str(error))

    def engine_save(self, instance, changes):
        raise NotImplementedError


class EngineAdmin(admin.ModelAdmin):
    """Deletes through engine_delete(obj), which may refuse: one message per refusal, nothing deleted.
    The confirmation pages summarise what goes (deletion_summary) instead of listing every row a
    cascade would take, which for a topic can be millions of delayed records."""

    actions = ["delete_selected"]  # this class's, which shadows the site's

    def engine_delete(self, obj):
        raise NotImplementedError

    def deletion_summary(self, obj):
        return str(obj)

    def save_model(self, request, obj, form, change):
        """The form already applied the change through the engine."""

    def get_deleted_objects(self, objs, request):
        objs = list(objs)
        return [self.deletion_summary(obj) for obj in objs], {self.model._meta.verbose_name_plural: len(objs)}, set(), []

    def delete_view(self, request, object_id, extra_context=None):
        if request.method != "POST":
            return super().delete_view(request, object_id, extra_context)  # the confirmation page
        obj = self.get_object(request, object_id)
        if obj is None or not self.has_delete_permission(request, obj):
            raise PermissionDenied
        opts = self.model._meta
        try:
            self.engine_delete(obj)
        except exceptions.QueueingError as error:
            self.message_user(request, str(error), messages.ERROR)
            return redirect(reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk]))
        self.log_deletions(request, [obj])
        self.message_user(request, f"Deleted {opts.verbose_name} {obj}.", messages.SUCCESS)
        return redirect(reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"))

    @admin.action(description="Delete selected %(verbose_name_plural)s", permissions=["delete"])
    def delete_selected(self, request, queryset):
        if not request.POST.get("post"):
            return admin_actions.delete_selected(self, request, queryset)  # Django's confirmation page
        deleted = []
        for obj in queryset:
            try:
                self.engine_delete(obj)
                deleted.append(obj)
            except exceptions.QueueingError as error:
                self.message_user(request, str(error), messages.WARNING)
        if deleted:
            self.log_deletions(request, deleted)
            self.message_user(request, f"{len(deleted)} deleted.", messages.SUCCESS)


class PartitionInline(ReadOnly, admin.TabularInline):
    model = models.Partition
    fields = ["number", "log_start_offset", "next_offset", "size_bytes"]
    readonly_fields = fields
    extra = 0


class TopicForm(EngineForm):
    class Meta:
        model = models.Topic
        fields = ["partition_count", "retention_ms", "retention_bytes", "max_message_bytes", "cleanup_policy",
                  *POLICY_FIELDS]

    def engine_save(self, instance, changes):
        config = {"partitions" if k == "partition_count" else k: v for k, v in changes.items()
                  if k not in POLICY_FIELDS}
        policy = {k: v for k, v in changes.items() if k in POLICY_FIELDS}
        retries.validate(**policy)
        if config:
            topics.alter_topic(instance.name, **config)
        if policy:
            retries.configure_topic(instance.name, **policy)


def _sum_over(rows, expression):
    """A subquery summing expression over rows (already filtered by an OuterRef), 0 when none."""
    total = rows.order_by().values(_one=Value(1)).annotate(total=Sum(expression)).values("total")
    return Coalesce(Subquery(total, output_field=IntegerField()), 0)


def _log_end(topic_ref="topic_id", partition_ref="partition"):
    return Subquery(models.Partition.objects.filter(topic_id=OuterRef(topic_ref), number=OuterRef(partition_ref))
                    .values("next_offset")[:1])


@admin.register(models.Topic)
class TopicAdmin(EngineAdmin):
    form = TopicForm
    list_display = ["name", "partition_count", "records", "log_end", "retention_ms", "max_message_bytes",
                    "cleanup_policy", "created_at"]
    search_fields = ["name"]
    readonly_fields = ["name", "created_at"]
    inlines = [PartitionInline]

    def get_queryset(self, request):
        partitions = models.Partition.objects.filter(topic=OuterRef("pk"))
        return super().get_queryset(request).annotate(
            records=_sum_over(partitions, F("next_offset") - F("log_start_offset")),
            log_end=_sum_over(partitions, F("next_offset")),
        )

    @admin.display(description="records in the log", ordering="records")
    def records(self, obj):
        return obj.records

    @admin.display(description="records ever appended", ordering="log_end")
    def log_end(self, obj):
        return obj.log_end

    def has_add_permission(self, request):
        # Topics are created with their partitions by `manage.py topics create` or the API.
        return False

    def engine_delete(self, obj):
        topics.delete_topic(obj.name)  # its records, offsets and producer states go with it

    def deletion_summary(self, obj):
        held = models.Partition.objects.filter(topic=obj).aggregate(n=Sum(F("next_offset") - F("log_start_offset")))
        return (f"topic {obj.name}: its {obj.partition_count} partition(s), the {held['n'] or 0} record(s) in its "
                f"log, its delayed records, and every group's offsets on it")


class MemberInline(ReadOnly, admin.TabularInline):
    model = models.GroupMember
    fields = ["id", "client_id", "host", "topics", "last_heartbeat"]
    readonly_fields = fields
    extra = 0


class CommittedOffsetInline(ReadOnly, admin.TabularInline):
    """Offsets move by commits and by `reset_offsets` (audited), never by hand here."""

    model = models.CommittedOffset
    fields = ["topic", "partition", "offset", "committed_at"]
    readonly_fields = fields
    extra = 0


class GroupForm(EngineForm):
    class Meta:
        model = models.ConsumerGroup
        fields = POLICY_FIELDS

    def engine_save(self, instance, changes):
        groups.configure_group(instance.name, **changes)


@admin.register(models.ConsumerGroup)
class ConsumerGroupAdmin(EngineAdmin):
    form = GroupForm
    list_display = ["name", "generation", "member_count", "lag", "rebalanced_at", "created_at"]
    search_fields = ["name"]
    readonly_fields = ["name", "generation", "rebalanced_at", "created_at"]
    inlines = [MemberInline, CommittedOffsetInline]

    def get_queryset(self, request):
        offsets = models.CommittedOffset.objects.filter(group=OuterRef("pk")).annotate(end=_log_end())
        members = models.GroupMember.objects.filter(group=OuterRef("pk"))
        return super().get_queryset(request).annotate(
            lag=_sum_over(offsets, Greatest(F("end") - F("offset"), 0)),
            member_count=Coalesce(Subquery(members.order_by().values(_one=Value(1)).annotate(n=Count("id"))
                                           .values("n"), output_field=IntegerField()), 0),
        )

    @admin.display(description="lag (records)", ordering="lag")
    def lag(self, obj):
        return obj.lag

    @admin.display(description="members", ordering="member_count")
    def member_count(self, obj):
        return obj.member_count

    def has_add_permission(self, request):
        return False  # a group exists once a member joins, or `groups configure` creates it

    def engine_delete(self, obj):
        groups.delete_group(obj.name)  # refused while a member is alive

    def deletion_summary(self, obj):
        return f"consumer group {obj.name}: its committed offsets (refused while a member is alive)"


@admin.register(models.OffsetReset)
class OffsetResetAdmin(ReadOnly, admin.ModelAdmin):
    """The audit trail of offset resets: append-only (written by reset_offsets), never edited here."""

    list_display = ["created_at", "group_name", "topic_name", "partition", "before", "after", "scenario", "actor"]
    list_filter = ["group_name"]
    actions = None


@admin.register(models.DeliveryAttempt)
class DeliveryAttemptAdmin(ReadOnly, admin.ModelAdmin):
    list_display = ["created_at", "group_name", "topic_name", "partition", "offset", "attempt", "outcome", "error"]
    list_filter = ["outcome", "group_name"]
    search_fields = ["=group_name", "=topic_name", "error"]
    show_full_result_count = False  # the table grows with every failure: no second COUNT(*)
    actions = None


class ShareMemberInline(ReadOnly, admin.TabularInline):
    model = models.ShareGroupMember
    fields = ["id", "client_id", "host", "topics", "last_heartbeat"]
    readonly_fields = fields
    extra = 0


class ShareGroupForm(EngineForm):
    class Meta:
        model = models.ShareGroup
        fields = ["lock_duration_ms", *POLICY_FIELDS]

    def engine_save(self, instance, changes):
        share.configure_group(instance.name, **changes)


@admin.register(models.ShareGroup)
class ShareGroupAdmin(EngineAdmin):
    form = ShareGroupForm
    list_display = ["name", "lock_duration_ms", "member_count", "backlog", "created_at"]
    search_fields = ["name"]
    readonly_fields = ["name", "created_at"]
    inlines = [ShareMemberInline]

    def get_queryset(self, request):
        windows = models.SharePartition.objects.filter(group=OuterRef("pk")).annotate(end=_log_end())
        members = models.ShareGroupMember.objects.filter(group=OuterRef("pk"))
        return super().get_queryset(request).annotate(
            backlog=_sum_over(windows, Greatest(F("end") - F("start_offset"), 0)),
            member_count=Coalesce(Subquery(members.order_by().values(_one=Value(1)).annotate(n=Count("id"))
                                           .values("n"), output_field=IntegerField()), 0),
        )

    @admin.display(description="backlog (records not finished)", ordering="backlog")
    def backlog(self, obj):
        return obj.backlog

    @admin.display(description="members", ordering="member_count")
    def member_count(self, obj):
        return obj.member_count

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        # Deleting drops the records its members hold; a task queue's group goes with its queue.
        return False


@admin.register(models.DelayedRecord)
class DelayedRecordAdmin(admin.ModelAdmin):
    list_display = ["id", "topic", "partition", "deliver_at", "created_at"]
    list_filter = ["topic"]
    date_hierarchy = "deliver_at"
    actions = ["cancel"]

    def get_readonly_fields(self, request, obj=None):
        return [field.name for field in self.model._meta.fields]

    def has_add_permission(self, request):
        return False  # sent with a delay by a producer

    def has_delete_permission(self, request, obj=None):
        return False  # cancelled with the action, through the engine

    def save_model(self, request, obj, form, change):
        """Every field is read-only: a save writes nothing (a full-row save could bring back a
        record the mover has just moved into the log)."""

    @admin.action(description="Cancel selected delayed records (not delivered yet)", permissions=["change"])
    def cancel(self, request, queryset):
        count = 0
        for delayed_id in queryset.values_list("id", flat=True):
            try:
                delayed.cancel(delayed_id)
                count += 1
            except exceptions.QueueingError as error:
                self.message_user(request, str(error), messages.WARNING)
        if count:
            self.message_user(request, f"{count} delayed record(s) cancelled.", messages.SUCCESS)
