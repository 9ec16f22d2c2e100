"""API keys (stored hashed, scoped, expiring, revocable) and remembered idempotent responses."""
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models


class ApiKey(models.Model):
    """A credential for services: only its prefix is readable; the secret is kept as a SHA-256 digest."""

    name = models.CharField(max_length=200, help_text="what the key is for, e.g. billing-service")
    prefix = models.CharField(max_length=16, unique=True, editable=False,
                              help_text="the readable start of the key, which finds it")
    digest = models.CharField(max_length=64, editable=False, help_text="SHA-256 of the whole key, hex")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys",
                             help_text="the account the key acts for in audit trails")
    scopes = models.JSONField(default=list, help_text='e.g. ["produce:orders.*", "task:shop.*", "operate"]')
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True, help_text="empty: never")
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        verbose_name = "API key"

    def __str__(self):
        return f"{self.prefix}… ({self.name})"


class IdempotentResponse(models.Model):
    """The response to a POST sent with an Idempotency-Key, replayed when the same request comes again.

    Stored in the transaction of the request's own effects, so it exists if and only if they do.
    """

    credential = models.CharField(max_length=64, help_text="key:<id> or user:<id>: keys are per credential")
    key = models.CharField(max_length=255)
    fingerprint = models.CharField(max_length=64, help_text="SHA-256 of the method, path and JSON body")
    status = models.PositiveSmallIntegerField()
    body = models.JSONField(null=True, encoder=DjangoJSONEncoder)
    headers = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["credential", "key"], name="api_idempotent_credential_key")]


class ThrottleCount(models.Model):
    """Requests counted in one fixed window of a throttle, shared by every web process.

    Counted by api/sql/throttle.sql (an upsert that returns the count); rows past expires_at are
    pruned a few at a time when a new window starts.
    """

    pk = models.CompositePrimaryKey("scope", "ident", "window_start")
    scope = models.CharField(max_length=32, help_text="api or login")
    ident = models.CharField(max_length=255, help_text="key:<id>, user:<id> or address:<ip>")
    window_start = models.DateTimeField()
    hits = models.PositiveIntegerField()
    expires_at = models.DateTimeField(db_index=True, help_text="the window's end")
