"""API keys: create (the key is shown once), authenticate, check scopes, revoke.

A key reads `sluice_<prefix>_<secret>`. The prefix finds the row; the whole key's SHA-256 digest
is compared in constant time. Keys are 190 random bits, so a fast hash is enough: there is nothing
to guess that a slow hash would protect, unlike a password.
"""
import datetime
import fnmatch
import hashlib
import hmac
import re
import secrets

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from api import exceptions, models

PREFIX = "sluice_"
KINDS = ("produce", "consume", "task")   # each with a name pattern: produce:orders.*
OPERATE = "operate"                      # resets, redrives, schedules, topics: no pattern
_PATTERN = re.compile(r"^[A-Za-z0-9._*?\[\]!:-]{1,249}$")
_KEY = re.compile(r"^sluice_([a-z0-9]{10})_([A-Za-z0-9_-]{32})$")
LAST_USE_EVERY = datetime.timedelta(minutes=1)  # last_used_at is written at most this often per key


class Unusable(Exception):
    """The presented key is unknown, malformed, expired or revoked; the message says which."""


def _digest(text):
    return hashlib.sha256(text.encode()).hexdigest()


def validate_scopes(scopes):
    """Return the scopes, checked: "operate", or "produce|consume|task:<pattern>"; InvalidScope if not."""
    if not isinstance(scopes, list) or not scopes:
        raise exceptions.InvalidScope(scope=scopes, reason="give at least one scope")
    for scope in scopes:
        if scope == OPERATE:
            continue
        kind, _, pattern = str(scope).partition(":")
        if kind not in KINDS:
            raise exceptions.InvalidScope(scope=scope, reason=f"the kind is one of {', '.join(KINDS)} or operate")
        if not _PATTERN.match(pattern):
            raise exceptions.InvalidScope(scope=scope, reason="give a name or a pattern after the colon, "
                                                              "e.g. produce:orders or task:shop.*")
    return list(dict.fromkeys(scopes))


def create(name, *, user, scopes, expires_at=None):
    """Store a new key; return (ApiKey, key text). The text is not stored: show it once."""
    scopes = validate_scopes(scopes)
    if not name or len(name) > 200:
        raise exceptions.InvalidScope(scope=name, reason="a key's name is 1 to 200 characters")
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    prefix = "".join(secrets.choice(alphabet) for _ in range(10))
    text = f"{PREFIX}{prefix}_{secrets.token_urlsafe(24)}"
    key = models.ApiKey.objects.create(name=name, prefix=prefix, digest=_digest(text), user=user, scopes=scopes,
                                       expires_at=expires_at)
    return key, text


def authenticate(text):
    """The ApiKey for text, its last use recorded; Unusable (with the reason) when it cannot be used."""
    match = _KEY.match(text or "")
    if not match:
        raise Unusable("malformed API key (expected sluice_<prefix>_<secret>)")
    key = models.ApiKey.objects.select_related("user").filter(prefix=match[1]).first()
    if key is None or not hmac.compare_digest(key.digest, _digest(text)):
        raise Unusable("unknown API key")
    now = timezone.now()
    if key.revoked_at is not None:
        raise Unusable(f"API key {key.prefix} was revoked at {key.revoked_at:%Y-%m-%dT%H:%M:%SZ}")
    if key.expires_at is not None and key.expires_at <= now:
        raise Unusable(f"API key {key.prefix} expired at {key.expires_at:%Y-%m-%dT%H:%M:%SZ}")
    if not key.user.is_active:
        raise Unusable(f"API key {key.prefix} belongs to an inactive user")
    if key.last_used_at is None or key.last_used_at < now - LAST_USE_EVERY:
        # Outside the request's transaction and at most once a minute: a hot key does not write a
        # row per request, and a request that fails stores nothing else.
        with transaction.atomic():
            models.ApiKey.objects.filter(pk=key.pk).filter(
                Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - LAST_USE_EVERY)).update(last_used_at=now)
    return key


def allows(key, kind, name=None):
    """Whether key holds a scope of kind (on name, when given): operate allows every operation."""
    for scope in key.scopes:
        if scope == OPERATE:
            if kind == OPERATE:
                return True
            continue
        scope_kind, _, pattern = scope.partition(":")
        if scope_kind == kind and (name is None or fnmatch.fnmatchcase(name, pattern)):
            return True
    return False


def revoke(prefix):
    """Revoke the key with prefix (idempotent: a revoked key keeps its first revocation time)."""
    prefix = prefix.removeprefix(PREFIX).split("_")[0]
    updated = models.ApiKey.objects.filter(prefix=prefix, revoked_at__isnull=True).update(revoked_at=timezone.now())
    if not updated and not models.ApiKey.objects.filter(prefix=prefix).exists():
        raise exceptions.ApiKeyNotFound(prefix=prefix)
    return models.ApiKey.objects.get(prefix=prefix)


def listing():
    """Every key, newest first, with its user."""
    return models.ApiKey.objects.select_related("user").order_by("-created_at")


def state(key, now=None):
    now = now or timezone.now()
    if key.revoked_at:
        return "revoked"
    if key.expires_at and key.expires_at <= now:
        return "expired"
    return "active"
