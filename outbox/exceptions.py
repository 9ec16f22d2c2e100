"""Transactional messaging's errors: one base class, each subclass's docstring its default message."""
from queueing.exceptions import QueueingError


class OutboxError(QueueingError):
    """A transactional messaging operation failed."""


class InvalidDestination(OutboxError):
    """Invalid destination {destination!r}: use sluice:TOPIC, amqp:EXCHANGE/ROUTING_KEY or redis:QUEUE."""


class HalfMessageNotFound(OutboxError):
    """There is no half message {id}."""


class HalfMessageResolved(OutboxError):
    """Half message {id} was already {state}; it cannot be {wanted} now."""
