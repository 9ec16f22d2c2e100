"""The OpenAPI schema's shared parts: the problem-details shape and the errors every operation can give."""
from drf_spectacular.extensions import OpenApiAuthenticationExtension

from api.errors import CONTENT_TYPE


class ApiKeyScheme(OpenApiAuthenticationExtension):
    """Authorization: Bearer <API key>, in the schema's security schemes."""

    target_class = "api.authentication.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer",
                "description": "an API key (manage.py apikeys create): sluice_<prefix>_<secret>"}

IDEMPOTENCY_KEY = {
    "in": "header", "name": "Idempotency-Key", "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 257},
    "description": "send the same key with a retried request: the first response is replayed "
                   "(Idempotent-Replayed: true); remembered 24 hours per credential",
}

# Every operation may answer these; the methods that take a body also these.
ERRORS = {
    "400": "invalid input or engine argument",
    "401": "no credential, or an unknown, expired or revoked one",
    "403": "the credential lacks the scope or permission",
    "404": "no such topic, record, task, group or route",
    "405": "method not allowed",
    "406": "the Accept header names no media type the API gives",
    "429": "throttled: retry after Retry-After seconds",
    "500": "an unexpected error; it was logged",
}
BODY_ERRORS = {
    "409": "conflict with the current state, or an Idempotency-Key in use",
    "413": "the body or a record is too large",
    "415": "the body is not application/json",
    "422": "the Idempotency-Key was used with another request",
}


def add_problems(result, generator, request, public):
    """drf-spectacular post-processing hook: describe the problem responses on every operation."""
    components = result.setdefault("components", {}).setdefault("schemas", {})
    components.setdefault("Problem", _problem_schema())
    reference = {CONTENT_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    retry_after = {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds to wait"}}
    for path in result.get("paths", {}).values():
        for method, operation in path.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            if method == "post":
                operation.setdefault("parameters", []).append(IDEMPOTENCY_KEY)
            responses = operation.setdefault("responses", {})
            wanted = dict(ERRORS, **(BODY_ERRORS if method in ("post", "put", "patch") else {}))
            for code, description in wanted.items():
                entry = responses.setdefault(code, {"description": description})
                entry.setdefault("content", reference)
                if code == "429":
                    entry.setdefault("headers", retry_after)
    return result


def _problem_schema():
    return {
        "type": "object",
        "description": "An RFC 9457 problem detail, the body of every error response.",
        "required": ["type", "title", "status", "detail"],
        "properties": {
            "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
            "detail": {"type": "string"},
            "errors": {"type": "array", "items": {
                "type": "object", "required": ["pointer", "detail"],
                "properties": {"pointer": {"type": "string"}, "detail": {"type": "string"}}}},
        },
    }


def only_v1(endpoints):
    """drf-spectacular pre-processing hook: the schema describes /api/v1/, not the deprecated /api/."""
    return [endpoint for endpoint in endpoints if endpoint[0].startswith("/api/v1/")]
