"""Endpoints for monitoring: /healthz (live), /readyz (ready to serve), /metrics (Prometheus)."""
import hmac

from django.conf import settings
from django.http import HttpResponse
from django.views.decorators.http import require_GET

from ops import health, metrics


@require_GET
def healthz(request):
    """The process answers; asks nothing of the database, so a database outage does not restart it."""
    return HttpResponse("ok\n", content_type="text/plain")


@require_GET
def readyz(request):
    """200 when the database answers and every migration is applied, else 503 and the reasons."""
    found = health.problems()
    if found:
        return HttpResponse("".join(f"{line}\n" for line in found), status=503, content_type="text/plain")
    return HttpResponse("ok\n", content_type="text/plain")


@require_GET
def metrics_view(request):
    """The platform's metrics; with SLUICE_METRICS_TOKEN set, only for `Authorization: Bearer <token>`."""
    token = getattr(settings, "SLUICE_METRICS_TOKEN", "")
    if token:
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), token.encode()):
            return HttpResponse("metrics need the bearer token SLUICE_METRICS_TOKEN\n", status=401,
                                content_type="text/plain", headers={"WWW-Authenticate": "Bearer"})
    body, content_type = metrics.render()
    return HttpResponse(body, content_type=content_type)
