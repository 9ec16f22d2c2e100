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
    mode: str  # "ordered" (consumer group) or "share" (share group)


ORDERED, SHARE = "ordered", "share"


def handler(topic, *, group, auto_offset_reset="earliest", mode=ORDERED):
    """Register a function to handle the records of topic for group: `@handler("orders", group="billing")`.

    mode="ordered": a consumer group; the worker calls the function with each Record in offset
    order per partition, and a failure is retried in place. mode="share": a share group; records
    are spread over every worker, acknowledged one by one, and a failure is retried after the
    back-off. Either way, past the delivery limit the record goes to the dead-letter topic; raise
    exceptions.Retry(delay=...) or exceptions.Reject(reason=...) to decide yourself.
    """
    topics.validate_name(topic)
    if mode not in (ORDERED, SHARE):
        raise exceptions.InvalidArgument(reason=f"mode must be {ORDERED!r} or {SHARE!r}")

    def register(function):
        subscriptions = _handlers.setdefault(group, {})
        if topic in subscriptions and subscriptions[topic].function is not function:
            raise exceptions.InvalidArgument(reason=f"group {group!r} already has a handler for {topic!r}")
        if any(s.mode != mode for s in subscriptions.values()):
            raise exceptions.InvalidArgument(reason=f"group {group!r} mixes ordered and share handlers")
        subscriptions[topic] = Subscription(
            group=group, topic=topic, function=function, auto_offset_reset=auto_offset_reset, mode=mode
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
