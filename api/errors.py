"""The one place errors become HTTP responses: RFC 9457 problem details (application/problem+json)."""
import logging
import re
from http import HTTPStatus

from django.core.exceptions import PermissionDenied
from django.http import Http404, JsonResponse
from rest_framework import exceptions as drf
from rest_framework import status

from outbox import exceptions as outbox_exceptions
from queueing import exceptions as queueing_exceptions
from scheduler import exceptions as scheduler_exceptions

logger = logging.getLogger("sluice.api")

CONTENT_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:sluice:problem:"

# Engine errors, first match wins.
STATUS = [
    ((queueing_exceptions.TopicNotFound, queueing_exceptions.PartitionNotFound, queueing_exceptions.GroupNotFound,
      queueing_exceptions.RecordNotFound, outbox_exceptions.HalfMessageNotFound, scheduler_exceptions.TaskNotFound,
      scheduler_exceptions.WorkflowNotFound, scheduler_exceptions.ScheduleNotFound), status.HTTP_404_NOT_FOUND),
    ((queueing_exceptions.TopicExists, queueing_exceptions.GroupHasMembers, outbox_exceptions.HalfMessageResolved,
      scheduler_exceptions.AlreadyEnqueued, scheduler_exceptions.ScheduleExists, scheduler_exceptions.NotCancellable,
      scheduler_exceptions.NotRetryable, scheduler_exceptions.WorkflowNotCancellable), status.HTTP_409_CONFLICT),
    ((queueing_exceptions.MessageTooLarge,), status.HTTP_413_REQUEST_ENTITY_TOO_LARGE),
    ((queueing_exceptions.QueueingError,), status.HTTP_400_BAD_REQUEST),
]


class PayloadTooLarge(drf.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is larger than the API accepts."
    default_code = "payload_too_large"


def _slug(name):
    """TopicNotFound -> topic-not-found; the last part of a problem's type URI."""
    return re.sub(r"(?<!^)(?=[A-Z])", "-", name).lower()


def problem(code, detail, *, kind=None, errors=None, headers=None):
    """A problem+json response: type, title, status, detail and, for invalid input, the fields."""
    body = {
        "type": TYPE_PREFIX + (kind or _slug(HTTPStatus(code).phrase.replace(" ", ""))),
        "title": HTTPStatus(code).phrase,
        "status": code,
        "detail": detail,
    }
    if errors:
        body["errors"] = errors
    response = JsonResponse(body, status=code, content_type=CONTENT_TYPE)
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def _pointers(detail, path=""):
    """DRF's nested validation errors as a flat list of {pointer, detail} (JSON pointers, RFC 6901)."""
    if isinstance(detail, dict):
        return [item for key, value in detail.items()
                for item in _pointers(value, path if key == "non_field_errors" else f"{path}/{key}")]
    if isinstance(detail, list):
        if all(not isinstance(value, (dict, list)) for value in detail):
            return [{"pointer": "#" + path, "detail": str(value)} for value in detail]
        return [item for index, value in enumerate(detail) if value
                for item in _pointers(value, f"{path}/{index}")]
    return [{"pointer": "#" + path, "detail": str(detail)}]


def _drf_problem(exc):
    headers = {}
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header
    if getattr(exc, "wait", None) is not None:
        headers["Retry-After"] = str(max(1, int(exc.wait + 0.999)))
    if isinstance(exc, drf.ValidationError):
        errors = _pointers(exc.detail)
        summary = "; ".join(f"{e['pointer'][2:] or 'body'}: {e['detail']}" for e in errors[:5])
        return problem(exc.status_code, f"invalid input: {summary}", kind="invalid-input", errors=errors)
    code = getattr(exc.detail, "code", None) or exc.default_code
    return problem(exc.status_code, str(exc.detail), kind=str(code).replace("_", "-"), headers=headers)


def handle(exc, context):
    """DRF's exception handler: every error, DRF's, the engine's or an unexpected one, as a problem."""
    if isinstance(exc, drf.APIException):
        return _drf_problem(exc)
    if isinstance(exc, Http404):
        return problem(404, "not found")
    if isinstance(exc, PermissionDenied):
        return problem(403, "You do not have permission to perform this action.", kind="permission-denied")
    for kinds, code in STATUS:
        if isinstance(exc, kinds):
            return problem(code, str(exc), kind=_slug(type(exc).__name__))
    logger.exception("unexpected error in the API", extra={"view": type(context.get("view")).__name__})
    return problem(500, "an unexpected error occurred; it was logged", kind="internal-error")


def not_found(request, *args, **kwargs):
    """Any path under /api/ that names no endpoint."""
    return problem(404, f"no endpoint at {request.path}; see /api/v1/schema/", kind="no-such-route")
