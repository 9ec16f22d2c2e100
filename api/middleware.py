"""Middleware of the API: the deprecation headers of the unversioned /api/ paths, and the throttle
on the login forms."""
from django.conf import settings
from django.http import HttpResponse

from api.throttling import LoginRate
# The day /api/ (unversioned) was deprecated in favour of /api/v1/ (RFC 9745's Deprecation header).
DEPRECATED_AT = 1796083200  # 2026-12-01T00:00:00Z


class Deprecation:
    """On /api/… outside /api/v1/: Deprecation and Link (rel="successor-version") headers."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        path = request.path_info
        if path.startswith("/api/") and not path.startswith("/api/v1/"):
            response["Deprecation"] = f"@{DEPRECATED_AT}"
            response["Link"] = f'</api/v1/{path[len("/api/"):]}>; rel="successor-version"'
        return response


class LoginThrottle:
    """POSTs to the login forms (SLUICE_API["LOGIN_PATHS"]) limited per client address to
    SLUICE_API["LOGIN_THROTTLE_RATE"]; beyond it, 429 with Retry-After and nothing checked."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.method == "POST" and request.path_info in settings.SLUICE_API["LOGIN_PATHS"]:
            limit = LoginRate()
            if not limit.allow_request(request, None):
                wait = max(1, int((limit.wait() or 1) + 0.999))
                response = HttpResponse(f"Too many login attempts from this address; try again in {wait} s.\n",
                                        status=429, content_type="text/plain; charset=utf-8")
                response["Retry-After"] = str(wait)
                return response
        return self.get_response(request)
