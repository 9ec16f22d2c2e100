"""Throttling: requests per credential (the API key, the session's user, or the client's address)."""
from django.conf import settings
from rest_framework import throttling

from api import permissions


class PerCredential(throttling.SimpleRateThrottle):
    """SLUICE_API["THROTTLE_RATE"] requests per credential; a refused request gets 429 and Retry-After."""

    scope = "api"

    def get_rate(self):
        return settings.SLUICE_API["THROTTLE_RATE"] or None

    def get_cache_key(self, request, view):
        if permissions.by_key(request):
            ident = f"key:{request.auth.pk}"
        elif request.user and request.user.is_authenticated:
            ident = f"user:{request.user.pk}"
        else:
            ident = f"address:{self.get_ident(request)}"
        return f"throttle:{self.scope}:{ident}"


class LoginRate(throttling.SimpleRateThrottle):
    """SLUICE_API["LOGIN_THROTTLE_RATE"] login attempts per client address (api.middleware.LoginThrottle)."""

    scope = "login"

    def get_rate(self):
        return settings.SLUICE_API["LOGIN_THROTTLE_RATE"] or None

    def get_cache_key(self, request, view):
        return f"throttle:{self.scope}:{self.get_ident(request)}"
