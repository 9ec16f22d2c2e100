"""Throttling: requests per credential (the API key, the session's user, or the client's address).

Counted in PostgreSQL (api.storage.count_request), in fixed windows of the rate's period, so every
web process (gunicorn's workers, several hosts) shares one count: N workers do not allow N times
the rate. A refused request is counted too, so hammering does not earn a new allowance.
"""
import math

from django.conf import settings
from rest_framework import throttling

from api import permissions, storage


class SharedRateThrottle(throttling.SimpleRateThrottle):
    """SimpleRateThrottle's rates ("10/minute") and keys, with the count kept in the database."""

    def allow_request(self, request, view):
        if self.rate is None:
            return True
        ident = self.get_cache_key(request, view)
        if ident is None:
            return True
        hits, self.left = storage.count_request(self.scope, ident, self.duration)
        return hits <= self.num_requests

    def wait(self):
        """Seconds until the window ends (Retry-After), at least 1."""
        return max(1, math.ceil(self.left))


class PerCredential(SharedRateThrottle):
    """SLUICE_API["THROTTLE_RATE"] requests per credential; a refused request gets 429 and Retry-After."""

    scope = "api"

    def get_rate(self):
        return settings.SLUICE_API["THROTTLE_RATE"] or None

    def get_cache_key(self, request, view):
        if permissions.by_key(request):
            return f"key:{request.auth.pk}"
        if request.user and request.user.is_authenticated:
            return f"user:{request.user.pk}"
        return f"address:{self.get_ident(request)}"


class LoginRate(SharedRateThrottle):
    """SLUICE_API["LOGIN_THROTTLE_RATE"] login attempts per client address (api.middleware.LoginThrottle)."""

    scope = "login"

    def get_rate(self):
        return settings.SLUICE_API["LOGIN_THROTTLE_RATE"] or None

    def get_cache_key(self, request, view):
        return f"address:{self.get_ident(request)}"
