"""Transactional messaging's errors: one base class, each subclass's docstring its default message."""
from queueing.exceptions import QueueingError


class OutboxError(QueueingError):
    """A transactional messaging operation failed."""


class InvalidEvent(OutboxError):
    """Invalid outbox event: {reason}"""


class InvalidDestination(OutboxError):
    """Invalid destination {destination!r}: {reason}"""


class BrokerUnavailable(OutboxError):
    """Broker {broker} is unavailable: {reason}"""


class BatchAppendFailed(OutboxError):
    """Appending the batch's events to their topics in one statement failed ({reason}); the batch
    must be rolled back and delivered again partition by partition."""


class MessageNacked(OutboxError):
    """Broker {broker} refused the message (Basic.Nack)."""


class HalfMessageNotFound(OutboxError):
    """There is no half message {id}."""


class HalfMessageResolved(OutboxError):
    """Half message {id} was already {state}; it cannot be {wanted} now."""
