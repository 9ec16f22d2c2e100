"""Half messages (RocketMQ's transactional messages): prepare, run the local transaction, then commit
or roll back; unresolved ones are checked back with their producer.

A half message is stored but invisible. commit() appends it to the log in the transaction that marks
it committed, so it becomes visible exactly once, and if and only if it was committed. A producer
that dies between its local transaction and the second phase is asked by the check-back loop —
through a registered Python checker or an HTTP callback — up to max_checks times; then the
message's unresolved policy (rollback by default, or commit) decides. Every check is recorded.
"""
import contextlib
import datetime
import json
import logging

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from outbox import callbacks, exceptions, models
from outbox.storage import half as storage
from queueing import loops, producer, topics
from queueing import exceptions as queueing_exceptions

logger = logging.getLogger("sluice.half")

COMMIT, ROLLBACK, UNKNOWN = "commit", "rollback", "unknown"
State = models.HalfMessage.State
Result = models.HalfMessageCheck.Result
_checkers = {}


def checker(name):
    """Register the function that says whether producer group `name`'s local transaction committed:
    `@half.checker("payments")` on `def check(message) -> "commit" | "rollback" | "unknown"`."""

    def register(function):
        _checkers[name] = function
        return function

    return register


def prepare(topic, value, *, key=None, headers=None, producer_group, checker=None, callback_url=None,
            check_interval_ms=60_000, max_checks=15, unresolved_policy=ROLLBACK, created_by=""):
    """Store a half message, invisible to consumers; return it. Runs in the caller's transaction."""
    info = topics.get_topic(topic)
    record_key = producer.encode_key(key)
    data, value_format = producer.encode_value(value)
    if len(data or b"") + len(record_key or b"") > info.max_message_bytes:
        raise queueing_exceptions.MessageTooLarge(topic=topic, size=len(data or b""), limit=info.max_message_bytes)
    if not isinstance(producer_group, str) or not 1 <= len(producer_group) <= 249:
        raise queueing_exceptions.InvalidArgument(reason="producer_group must be 1 to 249 characters")
    # The checker runs in the check-back process, which may not be this one: only its name is stored.
    if checker is not None and (not isinstance(checker, str) or not 1 <= len(checker) <= 255):
        raise queueing_exceptions.InvalidArgument(reason="checker must be a name of 1 to 255 characters")
    if bool(checker) == bool(callback_url):
        raise queueing_exceptions.InvalidArgument(
            reason="give a checker name or a callback_url (one of them), so an unresolved message can be checked back")
    if checker and checker not in _checkers:
        raise queueing_exceptions.InvalidArgument(
            reason=f"no checker named {checker!r} is registered (@half.checker in an installed app)")
    if callback_url:
        callbacks.validate(callback_url)
    if not 100 <= check_interval_ms <= 86_400_000 or not 1 <= max_checks <= 1000:
        raise queueing_exceptions.InvalidArgument(
            reason="check_interval_ms must be 100 to 86400000 and max_checks 1 to 1000")
    if unresolved_policy not in (COMMIT, ROLLBACK):
        raise queueing_exceptions.InvalidArgument(reason="unresolved_policy is commit or rollback")
    return models.HalfMessage.objects.create(
        producer_group=producer_group, topic=topic, key=record_key, value=data, value_format=value_format,
        headers=producer.encode_headers(headers), checker=checker or "", callback_url=callback_url or "",
        check_interval_ms=check_interval_ms, max_checks=max_checks, unresolved_policy=unresolved_policy,
        next_check_at=timezone.now() + datetime.timedelta(milliseconds=check_interval_ms), created_by=created_by,
    )


_NOT_FOUND = (models.HalfMessage.DoesNotExist, ValueError, ValidationError)  # a bad id finds nothing too


def _locked(message_id):
    try:
        return models.HalfMessage.objects.select_for_update().get(id=message_id)
    except _NOT_FOUND:
        raise exceptions.HalfMessageNotFound(id=message_id) from None


def commit(message_id, *, reason="committed by the producer"):
    """Append the half message to the log and mark it committed, in one transaction; return it.

    Idempotent: committing a committed message returns it unchanged. Raises HalfMessageResolved
    for a rolled-back one.
    """
    with transaction.atomic():
        message = _locked(message_id)
        if message.state == State.COMMITTED:
            return message
        if message.state == State.ROLLED_BACK:
            raise exceptions.HalfMessageResolved(id=message_id, state="rolled back", wanted="committed")
        from queueing import partitioner, types

        info = topics.cached_topic(message.topic)
        key = None if message.key is None else bytes(message.key)
        partition = 0 if key is None else partitioner.partition_for_key(key, info.partition_count)
        headers = {**(message.headers or {}), "sluice.half.id": str(message.id)}
        record = types.OutgoingRecord(key, None if message.value is None else bytes(message.value),
                                      message.value_format, headers)
        message.offset = producer.Producer().append(info, partition, [record])
        message.partition = partition
        message.state = State.COMMITTED
        message.resolved_at = timezone.now()
        message.resolution = reason[:255]
        message.save()
        return message


def rollback(message_id, *, reason="rolled back by the producer"):
    """Discard the half message; idempotent. Raises HalfMessageResolved for a committed one."""
    with transaction.atomic():
        message = _locked(message_id)
        if message.state == State.ROLLED_BACK:
            return message
        if message.state == State.COMMITTED:
            raise exceptions.HalfMessageResolved(id=message_id, state="committed", wanted="rolled back")
        message.state = State.ROLLED_BACK
        message.resolved_at = timezone.now()
        message.resolution = reason[:255]
        message.save(update_fields=["state", "resolved_at", "resolution"])
        return message


def status(message_id):
    """The half message with its checks; raises HalfMessageNotFound."""
    try:
        return models.HalfMessage.objects.prefetch_related("checks").get(id=message_id)
    except _NOT_FOUND:
        raise exceptions.HalfMessageNotFound(id=message_id) from None


@contextlib.contextmanager
def local_transaction(topic, value, **options):
    """Prepare, run the block (your local transaction), then commit; roll back if the block raises.

    For a local transaction on another database or service. On the same database, plain
    `transaction.atomic()` around your writes and `producer.send` already gives all or nothing.
    """
    message = prepare(topic, value, **options)
    try:
        yield message
    except BaseException:
        rollback(message.id, reason="the local transaction failed")
        raise
    commit(message.id)


# Check-back -----------------------------------------------------------------------------------

def ask(message):
    """Ask the producer about an unresolved half message; return (Result, detail)."""
    if message.checker:
        function = _checkers.get(message.checker)
        if function is None:
            return Result.ERROR, f"no checker named {message.checker!r} in this process"
        try:
            answer = function(message)
        except Exception as error:  # noqa: BLE001 - the check failed, recorded as such
            return Result.ERROR, f"{type(error).__name__}: {error}"
        return _result(answer)
    if message.callback_url:
        return _call(message)
    return Result.ERROR, "the message has neither a checker nor a callback_url"


def _result(answer):
    answer = (answer or "").strip().lower() if isinstance(answer, str) else ""
    if answer in (COMMIT, ROLLBACK, UNKNOWN):
        return answer, ""
    return Result.ERROR, f"the producer answered {answer!r}; expected commit, rollback or unknown"


def _call(message):
    body = json.dumps({
        "id": str(message.id), "topic": message.topic, "producer_group": message.producer_group,
        "key": None if message.key is None else bytes(message.key).decode(errors="replace"),
        "headers": message.headers or {}, "created_at": message.created_at.isoformat(),
        "check_count": message.check_count,
    }).encode()
    timeout = settings.SLUICE.get("CHECKBACK_TIMEOUT_S", 5)
    try:
        answer = json.loads(callbacks.post(message.callback_url, body, timeout=timeout) or b"{}")
    except TimeoutError:
        return Result.TIMEOUT, f"no answer within {timeout}s"
    except callbacks.Refused as error:
        return Result.ERROR, f"refused: {error}"[:500]
    except (ValueError, OSError) as error:
        return Result.ERROR, str(error)[:500]
    return _result(answer.get("status") if isinstance(answer, dict) else None)


def check(message_id):
    """Check one claimed half message back and act on the answer (or on the policy at the end)."""
    message = models.HalfMessage.objects.get(id=message_id)
    if message.state != State.PREPARED:
        return
    result, detail = ask(message)
    models.HalfMessageCheck.objects.create(half_message=message, number=message.check_count, result=result,
                                           detail=detail[:2000])
    try:
        if result == COMMIT:
            commit(message.id, reason=f"check-back {message.check_count}: the producer committed")
        elif result == ROLLBACK:
            rollback(message.id, reason=f"check-back {message.check_count}: the producer rolled back")
        elif message.check_count >= message.max_checks:
            reason = f"unresolved after {message.check_count} checks: policy {message.unresolved_policy}"
            (commit if message.unresolved_policy == COMMIT else rollback)(message.id, reason=reason)
            logger.warning("half message %s %s", message.id, reason)
    except exceptions.HalfMessageResolved:
        pass  # the producer resolved it meanwhile


class CheckBack(loops.Loop):
    """The loop that checks back unresolved half messages; several may run."""

    name = "half-message check-back"

    def __init__(self, *, batch=50, interval=1.0):
        super().__init__()
        self.batch = batch
        self.interval = interval
        self.checked = 0

    def run_once(self):
        ids = storage.claim_due_checks(limit=self.batch)
        for message_id in ids:
            if self.stop_event.is_set():
                break
            check(message_id)
            self.checked += 1
        return len(ids) == self.batch
