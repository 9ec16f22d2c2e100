"""Idempotency-Key on POSTs (the IETF httpapi draft): a retried request replays the first response.

The same key with the same request (method, path, JSON body) gets the first response again, status,
body and headers, with `Idempotent-Replayed: true`; with another request, 422; while the first is
still running, 409. A key is remembered per credential for SLUICE_API["IDEMPOTENCY_TTL_S"].

The view runs inside a transaction holding an advisory lock on (credential, key), and its response
is stored in that same transaction: the response is remembered if and only if the request's effects
committed. A request that fails (4xx, 5xx, an exception, a crash) stores nothing, so it can be
retried with the same key once corrected.
"""
import datetime
import functools
import hashlib
import json
import re

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from rest_framework import exceptions, renderers, status
from rest_framework.response import Response

from api import models, permissions

HEADER = "Idempotency-Key"
_KEY = re.compile(r'^"?([\x21\x23-\x7e]{1,255})"?$')
REPLAYED_HEADERS = ("Location", "Content-Location")
PRUNE_BATCH = 100


class InProgress(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "a request with this Idempotency-Key is still in progress; retry after it finishes"
    default_code = "idempotency_key_in_progress"


class Reused(exceptions.APIException):
    status_code = 422
    default_detail = "this Idempotency-Key was used with a different request (method, path or body)"
    default_code = "idempotency_key_reused"


def credential(request):
    if permissions.by_key(request):
        return f"key:{request.auth.pk}"
    return f"user:{request.user.pk}"


def fingerprint(request):
    body = json.dumps(request.data, sort_keys=True, separators=(",", ":"), default=str)
    text = f"{request.method} {request.get_full_path()} {body}"
    return hashlib.sha256(text.encode()).hexdigest()


def idempotent(method):
    """Decorate a view's post(): honour Idempotency-Key when the request carries one."""

    @functools.wraps(method)
    def wrapper(view, request, *args, **kwargs):
        given = request.headers.get(HEADER)
        if given is None:
            return method(view, request, *args, **kwargs)
        match = _KEY.match(given)
        if not match:
            raise exceptions.ValidationError(
                {HEADER: "1 to 255 visible ASCII characters, optionally in double quotes"})
        who, key, print_ = credential(request), match[1], fingerprint(request)  # parses the body first
        with transaction.atomic():
            with connection.cursor() as cursor:
                # Held until this transaction ends: a second request with the key sees it taken and
                # gets 409 instead of running the view twice.
                cursor.execute("SELECT pg_try_advisory_xact_lock(hashtext(%s), hashtext(%s))",
                               [f"sluice.idempotency:{who}", key])
                if not cursor.fetchone()[0]:
                    raise InProgress()
            now = timezone.now()
            stored = models.IdempotentResponse.objects.filter(credential=who, key=key, expires_at__gt=now).first()
            if stored is not None:
                if stored.fingerprint != print_:
                    raise Reused()
                return _replay(stored)
            response = method(view, request, *args, **kwargs)
            if 200 <= response.status_code < 300:
                _remember(who, key, print_, response, now)
            else:
                transaction.set_rollback(True)  # a refused request leaves nothing behind
            return response

    return wrapper


def _remember(who, key, print_, response, now):
    ttl = datetime.timedelta(seconds=settings.SLUICE_API["IDEMPOTENCY_TTL_S"])
    models.IdempotentResponse.objects.filter(credential=who, key=key).delete()  # an expired one
    models.IdempotentResponse.objects.create(
        # As the client received it: DRF's rendering, not the model field's encoder, decides the text.
        credential=who, key=key, fingerprint=print_, status=response.status_code,
        body=json.loads(renderers.JSONRenderer().render(response.data) or b"null"),
        headers={name: response[name] for name in REPLAYED_HEADERS if name in response},
        expires_at=now + ttl)
    expired = models.IdempotentResponse.objects.filter(expires_at__lte=now).values("pk")[:PRUNE_BATCH]
    models.IdempotentResponse.objects.filter(pk__in=expired).delete()


def _replay(stored):
    response = Response(stored.body, status=stored.status, headers=dict(stored.headers))
    response["Idempotent-Replayed"] = "true"
    return response
