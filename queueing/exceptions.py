"""The engine's errors: one base class, each subclass's docstring its default message."""


class QueueingError(Exception):
    """A queue engine operation failed."""

    def __init__(self, message=None, **data):
        self.data = data
        text = message or (self.__doc__ or "").strip()
        if data:
            text = text.format(**data) if "{" in text else text
        super().__init__(text)


class InvalidArgument(QueueingError):
    """Invalid argument: {reason}"""


class InvalidTopicName(InvalidArgument):
    """Invalid topic name {name!r}: use 1 to 249 characters from a-z, A-Z, 0-9, '.', '_' and '-'."""


class TopicExists(QueueingError):
    """Topic {name!r} already exists."""


class TopicNotFound(QueueingError):
    """Topic {name!r} does not exist."""


class PartitionNotFound(QueueingError):
    """Topic {topic!r} has no partition {partition}."""


class MessageTooLarge(QueueingError):
    """The record is {size} bytes, larger than topic {topic!r} accepts ({limit} bytes)."""


class OutOfOrderSequence(QueueingError):
    """Producer {producer_id} sent sequence {sequence} to {topic}-{partition}, expected {expected}."""


class DuplicateSequence(QueueingError):
    """Producer {producer_id} already stored sequence {sequence} on {topic}-{partition}."""


class GroupNotFound(QueueingError):
    """Consumer group {group!r} does not exist."""


class UnknownMember(QueueingError):
    """Member {member_id} is not in consumer group {group!r} (it left or its session expired)."""


class CommitFailed(QueueingError):
    """Offset commit refused for group {group!r}: generation {generation} is no longer current or the
    member does not own the partition; the group has rebalanced or its offsets were reset."""


class LeaseExpired(QueueingError):
    """The lock on {topic}-{partition}@{offset} expired or the record was delivered again; the
    acknowledgement was refused."""


class Retry(Exception):
    """Raised by a handler: deliver this record again after delay seconds (None: the policy's back-off)."""

    def __init__(self, delay=None, reason=""):
        self.delay = delay
        self.reason = reason
        super().__init__(reason or f"retry requested (delay {delay})")


class Reject(Exception):
    """Raised by a handler: this record can never succeed; dead-letter it now."""

    def __init__(self, reason=""):
        self.reason = reason
        super().__init__(reason or "rejected by the handler")
