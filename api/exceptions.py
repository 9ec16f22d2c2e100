"""The REST API's own errors (credentials, idempotency): one base class, docstrings as messages."""
from queueing.exceptions import QueueingError


class ApiError(QueueingError):
    """An API operation failed."""


class InvalidScope(ApiError):
    """Invalid scope {scope!r}: {reason}"""


class ApiKeyNotFound(ApiError):
    """There is no API key {prefix!r}."""
