"""The one place engine errors become HTTP responses."""
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler

from outbox import exceptions as outbox_exceptions
from queueing import exceptions as queueing_exceptions

STATUS = [
    ((queueing_exceptions.TopicNotFound, queueing_exceptions.PartitionNotFound, queueing_exceptions.GroupNotFound,
      outbox_exceptions.HalfMessageNotFound), status.HTTP_404_NOT_FOUND),
    ((queueing_exceptions.TopicExists, outbox_exceptions.HalfMessageResolved), status.HTTP_409_CONFLICT),
    ((queueing_exceptions.MessageTooLarge,), status.HTTP_413_REQUEST_ENTITY_TOO_LARGE),
    ((queueing_exceptions.QueueingError,), status.HTTP_400_BAD_REQUEST),
]


def handle(exc, context):
    """DRF's handler, plus engine errors: a clear message and the fitting status code."""
    response = exception_handler(exc, context)
    if response is not None:
        return response
    for kinds, code in STATUS:
        if isinstance(exc, kinds):
            return Response({"detail": str(exc), "error": type(exc).__name__}, status=code)
    return None
