"""The engine's errors: one base class, each subclass's docstring its default message."""


class QueueingError(Exception):
    """A queue engine operation failed."""

    def __init__(self, message=None, **data):
        self.data = data
        # A docstring wrapped over lines is still a one-line message (commands print it as their error).
        text = message or " ".join((self.__doc__ or "").split())
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


class NotADeadLetterTopic(QueueingError):
    """Topic {name!r} is not a dead-letter topic: records are deleted only from dead-letter topics
    unless asked for any topic."""


class OffsetOutOfRange(InvalidArgument):
    """Offset {offset} is beyond the end of {topic}-{partition} ({end}): records can be deleted up to
    the log end."""


class MessageTooLarge(QueueingError):
    """The record is {size} bytes, larger than topic {topic!r} accepts ({limit} bytes)."""


class OutOfOrderSequence(QueueingError):
    """Producer {producer_id} sent sequence {sequence} to {topic}-{partition}, expected {expected}."""


class DuplicateSequence(QueueingError):
    """Producer {producer_id} already stored sequence {sequence} on {topic}-{partition}."""


class GroupNotFound(QueueingError):
    """Consumer group {group!r} does not exist."""


class GroupHasMembers(QueueingError):
    """Consumer group {group!r} has {count} live member(s); stop them first."""


class UnknownMember(QueueingError):
    """Member {member_id} is not in consumer group {group!r} (it left or its session expired)."""


class CommitFailed(QueueingError):
    """Offset commit refused for group {group!r}: generation {generation} is no longer current or the
    member does not own the partition; the group has rebalanced or its offsets were reset."""


class DelayedRecordNotFound(QueueingError):
    """No delayed record {id} is waiting: it was delivered, cancelled, or never existed."""


class LeaseExpired(QueueingError):
    """The lock on {topic}-{partition}@{offset} expired or the record was delivered again; the
    acknowledgement was refused."""


class RecordNotFound(QueueingError):
    """There is no record {topic}-{partition}@{offset} (outside the partition's log, or removed)."""


class UnreplayableRecords(QueueingError):
    """{count} record(s) of {topic} cannot be replayed, {outcome}: {listing}. Fix them, or skip them
    (--skip-invalid) to replay the others."""

    def __init__(self, *, topic, count, records, part_way=False):
        by_problem = {}
        for partition, offset, problem in records[:10]:
            by_problem.setdefault(problem, []).append(f"{topic}-{partition}@{offset}")
        listing = "; ".join(f"{', '.join(where)} ({problem})" for problem, where in by_problem.items())
        if count > 10:
            listing += f"; and {count - 10} more"
        message = " ".join(self.__doc__.split())
        outcome = "and the replay stopped there" if part_way else "so nothing was sent"
        super().__init__(message, topic=topic, count=count, records=records, listing=listing, outcome=outcome)


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
