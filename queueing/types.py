"""Frozen value types passed between the engine's layers."""
import dataclasses
import datetime
import json
import typing
from typing import Any

from django.db import models


class ValueFormat(models.IntegerChoices):
    BYTES = 0, "bytes"
    JSON = 1, "json"


class Acks(models.TextChoices):
    """Producer acknowledgement levels, mapped onto PostgreSQL's synchronous_commit.

    NONE ("0"): synchronous_commit=off; the send returns before the WAL is flushed, so a crash of
        the database server (not of the client) can lose the last few hundred milliseconds of sends.
    LEADER ("1"): synchronous_commit=local; durable on the primary's disk, not waiting for replicas.
    ALL ("all"): synchronous_commit=on; durable on the primary and on every synchronous standby
        listed in synchronous_standby_names (with none configured, the same as LEADER).
    """

    NONE = "0", "0"
    LEADER = "1", "1"
    ALL = "all", "all"


SYNCHRONOUS_COMMIT = {Acks.NONE: "off", Acks.LEADER: "local", Acks.ALL: "on"}


class OffsetReset(models.TextChoices):
    EARLIEST = "earliest", "earliest"
    LATEST = "latest", "latest"


@dataclasses.dataclass(frozen=True, kw_only=True)
class TopicInfo:
    id: int
    name: str
    partition_count: int
    max_message_bytes: int
    retention_ms: int | None
    retention_bytes: int | None
    cleanup_policy: str = "delete"


@dataclasses.dataclass(frozen=True, kw_only=True)
class PartitionInfo:
    topic: str
    partition: int
    log_start_offset: int
    log_end_offset: int
    size_bytes: int


class OutgoingRecord(typing.NamedTuple):
    """A record as a producer hands it to storage: already encoded."""

    key: bytes | None
    value: bytes | None
    value_format: int
    headers: dict[str, str] | None


class RecordMetadata(typing.NamedTuple):
    """Where a sent record was stored."""

    topic: str
    partition: int
    offset: int
    duplicate: bool = False


class Record(typing.NamedTuple):
    """A record read from the log. A named tuple: consumers build thousands a second."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    value_format: int
    headers: dict[str, str]
    timestamp: datetime.datetime
    delivery_count: int = 0  # share groups: which delivery of the record this is (1 = first)

    @property
    def data(self) -> Any:
        """The value decoded: JSON values as Python objects, others as bytes."""
        if self.value is not None and self.value_format == ValueFormat.JSON:
            return json.loads(self.value)
        return self.value

    @property
    def key_text(self) -> str | None:
        return None if self.key is None else self.key.decode("utf-8", errors="replace")


@dataclasses.dataclass(frozen=True, kw_only=True, order=True)
class TopicPartition:
    topic: str
    partition: int

    def __str__(self):
        return f"{self.topic}-{self.partition}"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Assignment:
    """A member's view of its group after a join or sync."""

    group_id: int
    member_id: str
    generation: int
    partitions: tuple[tuple[int, str, int], ...]  # (topic_id, topic name, partition)


@dataclasses.dataclass(frozen=True, kw_only=True)
class OffsetPlanRow:
    """One row of an offset reset plan."""

    group: str
    topic: str
    partition: int
    current_offset: int | None
    new_offset: int
    log_start_offset: int
    log_end_offset: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReplayRow:
    """One record of a replay plan: where it is read, and where it goes or why it cannot."""

    partition: int
    offset: int
    key: bytes | None
    size: int  # of the value, in bytes
    preview: bytes | None  # the value's first bytes
    target: TopicPartition | None
    problem: str = ""


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReplayPlan:
    """A replay's selection, fixed when planned; executing it reads exactly these ranges again."""

    source: str
    to_topic: str | None  # None: each dead letter goes back to the topic its DLQ_ORIGINAL_TOPIC names
    ranges: tuple[tuple[int, int, int], ...]  # (partition, first offset, end offset exclusive)
    since: datetime.datetime | None
    until: datetime.datetime | None
    key: bytes | None
    limit: int | None
    count: int  # records selected, those that cannot be replayed included
    targets: tuple[tuple[TopicPartition, int], ...]  # where the others go, and how many
    sample: tuple[ReplayRow, ...]  # the first few selected
    invalid: tuple[ReplayRow, ...]  # those that cannot be replayed (the first thousand)
    invalid_count: int
    # With to_topic None: False redrives each dead letter to the group that failed it only; True
    # sends it to every group reading its original topic.
    all_groups: bool = False


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReplayResult:
    replayed: int
    skipped: int  # could not be replayed and were left out
    last: tuple[tuple[int, int], ...]  # (source partition, last offset handled)
    stopped: bool  # ended early on request


# Headers the engine writes. A dead letter names where it came from; a replayed record names its origin.
DLQ_ORIGINAL_TOPIC = "sluice.dlq.topic"
DLQ_ORIGINAL_PARTITION = "sluice.dlq.partition"
DLQ_ORIGINAL_OFFSET = "sluice.dlq.offset"
DLQ_GROUP = "sluice.dlq.group"
DLQ_ATTEMPTS = "sluice.dlq.attempts"
DLQ_ERROR = "sluice.dlq.error"
DLQ_FAILED_AT = "sluice.dlq.failed_at"
REPLAY_ORIGIN = "sluice.replay.origin"  # "topic-partition@offset" of the record replayed
# A record redriven to one group: the workers of every other group pass over it (docs/replay.md).
REDRIVE_GROUP = "sluice.redrive.group"
DELAYED_ID = "sluice.delayed.id"  # the DelayedRecord id a record was delayed under
DELAYED_DELIVER_AT = "sluice.delayed.deliver_at"  # the time it was due, ISO 8601


@dataclasses.dataclass(frozen=True, kw_only=True)
class DelayedMetadata:
    """A delayed send: the record waits under this id until deliver_at."""

    topic: str
    id: int
    deliver_at: datetime.datetime
