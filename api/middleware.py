"""Headers of the API's responses: the deprecation of the unversioned /api/ paths."""
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
