"""The admin's API keys: create one (its text shown once), see prefixes, scopes and last use, revoke."""
from django import forms
from django.contrib import admin, messages

from api import exceptions, keys, models


class ApiKeyForm(forms.ModelForm):
    scopes = forms.JSONField(help_text='a JSON list, e.g. ["produce:orders.*", "consume:orders", "task:shop.*", '
                                       '"operate"]')

    class Meta:
        model = models.ApiKey
        fields = ["name", "user", "scopes", "expires_at"]

    def clean_scopes(self):
        try:
            return keys.validate_scopes(self.cleaned_data["scopes"])
        except exceptions.InvalidScope as error:
            raise forms.ValidationError(str(error)) from None


@admin.register(models.ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    form = ApiKeyForm
    list_display = ["prefix", "name", "user", "scopes", "state", "expires_at", "last_used_at", "created_at"]
    list_filter = ["revoked_at"]
    search_fields = ["prefix", "name", "user__username"]
    readonly_fields = ["prefix", "created_at", "last_used_at", "revoked_at"]
    actions = ["revoke"]

    @admin.display(description="state")
    def state(self, key):
        return keys.state(key)

    def save_model(self, request, obj, form, change):
        if change:
            return super().save_model(request, obj, form, change)
        key, text = keys.create(obj.name, user=obj.user, scopes=obj.scopes, expires_at=obj.expires_at)
        obj.pk, obj.prefix = key.pk, key.prefix
        messages.warning(request, f"The new API key, shown only this once: {text}")

    @admin.action(description="Revoke the selected keys")
    def revoke(self, request, queryset):
        active = list(queryset.filter(revoked_at__isnull=True))
        for key in active:  # through api.keys, as the command and the console; in the admin's history
            keys.revoke(key.prefix)
            self.log_change(request, key, [{"changed": {"fields": ["revoked_at"]}}])
        messages.success(request, f"Revoked {len(active)} key(s).")
