"""Handlers registered for consumer groups, found in each installed app's `handlers` module."""
import dataclasses

from django.utils.module_loading import autodiscover_modules

from queueing import exceptions, topics

_handlers: dict[str, dict[str, "Subscription"]] = {}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Subscription:
    group: str
    topic: str
    function: object
    auto_offset_reset: str


def handler(topic, *, group, auto_offset_reset="earliest"):
    """Register a function to handle the records of topic for group: `@handler("orders", group="billing")`.

    The worker calls it with each Record, in offset order per partition. An exception is a failed
    delivery: the record is retried in place.
    """
    topics.validate_name(topic)

    def register(function):
        subscriptions = _handlers.setdefault(group, {})
        if topic in subscriptions and subscriptions[topic].function is not function:
            raise exceptions.InvalidArgument(reason=f"group {group!r} already has a handler for {topic!r}")
        subscriptions[topic] = Subscription(
            group=group, topic=topic, function=function, auto_offset_reset=auto_offset_reset
        )
        return function

    return register


def discover():
    autodiscover_modules("handlers")


def subscriptions(group):
    """Return {topic: Subscription} registered for group."""
    discover()
    return dict(_handlers.get(group, {}))


def groups():
    discover()
    return sorted(_handlers)


def unregister(group, topic=None):
    """Remove a group's handlers (tests register their own)."""
    if topic is None:
        _handlers.pop(group, None)
    else:
        _handlers.get(group, {}).pop(topic, None)
