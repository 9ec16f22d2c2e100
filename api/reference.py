"""The OpenAPI schema and its reference pages (Swagger UI, Redoc), open to all, with every asset
served by the project from the drf-spectacular-sidecar package (no CDN at run time)."""
from pathlib import Path

import drf_spectacular_sidecar
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView
from rest_framework.permissions import AllowAny

# The API key's security scheme, registered by importing it; here rather than at start-up, so a
# command does not import drf-spectacular (the schema's hooks in settings import it too).
from api import schema  # noqa: F401

ASSETS = Path(drf_spectacular_sidecar.__file__).parent / "static" / "drf_spectacular_sidecar"


class Schema(SpectacularAPIView):
    """The schema describes the API, not its data: anyone may read it."""

    permission_classes = [AllowAny]
    authentication_classes = []
    throttle_classes = []


class Reference(SpectacularSwaggerView):
    permission_classes = [AllowAny]
    authentication_classes = []
    throttle_classes = []


class Redoc(SpectacularRedocView):
    template_name = "api/redoc.html"
    permission_classes = [AllowAny]
    authentication_classes = []
    throttle_classes = []
