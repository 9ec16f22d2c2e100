"""The console's API keys page: list, create (the key shown once, in the answer to the POST), revoke.

Thin over api.keys, as `manage.py apikeys` and the admin are: one key generator, one revocation.
"""
from django.contrib import messages
from django.db import transaction
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache

from api import exceptions as api_exceptions
from api import keys
from console import access, audit
from queueing import exceptions, offsets


def _rows():
    now = timezone.now()
    return [{"prefix": k.prefix, "name": k.name, "user": k.user.get_username(), "scopes": k.scopes,
             "created_at": k.created_at, "expires_at": k.expires_at, "last_used_at": k.last_used_at,
             "revoked_at": k.revoked_at, "state": keys.state(k, now)} for k in keys.listing()]


@access.viewer
def api_keys_page(request):
    """Every key, newest first: prefix, name, owner, scopes, times and state; never a secret."""
    return render(request, "console/api_keys.html", {"rows": _rows(), "form": {}})


@never_cache
@access.operator
def create_api_key(request):
    """Create a key for the signed-in user; the answer (not stored, not cached) shows its text once."""
    form = {field: request.POST.get(field, "").strip() for field in ("name", "scopes", "expires_at")}
    try:
        scopes = form["scopes"].replace(",", " ").split()
        expires_at = offsets.parse_datetime(form["expires_at"]) if form["expires_at"] else None
        if expires_at is not None and expires_at <= timezone.now():
            raise exceptions.InvalidArgument(reason="the expiry must be in the future (or empty: never)")
        with transaction.atomic():
            key, text = keys.create(form["name"], user=request.user, scopes=scopes, expires_at=expires_at)
            audit.record(actor=request.user.get_username(), action="create API key", target=key.prefix,
                         after={"name": key.name, "scopes": key.scopes,
                                "expires_at": expires_at and expires_at.isoformat()})
    except exceptions.QueueingError as error:
        messages.error(request, str(error))
        return render(request, "console/api_keys.html", {"rows": _rows(), "form": form}, status=400)
    return render(request, "console/api_key_created.html", {"key": key, "text": text})


@access.operator
def revoke_api_key(request, prefix):
    """Revoke a key (api.keys.revoke, idempotent), audited."""
    try:
        with transaction.atomic():
            before = keys.listing().filter(prefix=prefix).values_list("revoked_at", flat=True).first()
            key = keys.revoke(prefix)
            audit.record(actor=request.user.get_username(), action="revoke API key", target=key.prefix,
                         before={"revoked_at": before and before.isoformat()},
                         after={"revoked_at": key.revoked_at.isoformat()})
    except api_exceptions.ApiError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, f"revoked API key {key.prefix} ({key.name})")
    return redirect("console:api_keys")
