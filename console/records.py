"""How the console reads and shows records: a page of a partition, a value as pretty JSON, text, or
hex and base64 for bytes."""
import base64
import json

from queueing import remote, types

PREVIEW_BYTES = 64 * 1024  # a page shows at most this much of a value
PAGE_RECORDS = 50  # records a page of a partition shows


def shown_value(record):
    """Return (kind, text) for record's value: ("json", pretty JSON) for JSON or text that parses as
    JSON, ("text", UTF-8) or ("bytes", hex and base64); a value over PREVIEW_BYTES is cut."""
    value = record.value
    if value is None:
        return "null", ""
    cut = value[:PREVIEW_BYTES]
    if len(value) > PREVIEW_BYTES:
        more = f"\n… {len(value) - PREVIEW_BYTES} more bytes"
    else:
        more = ""
        try:
            return "json", json.dumps(json.loads(value), indent=2, ensure_ascii=False, sort_keys=True)
        except ValueError:
            pass
    try:
        return "text", cut.decode("utf-8") + more
    except UnicodeDecodeError:
        return "bytes", f"hex: {cut.hex(' ')}\nbase64: {base64.b64encode(cut).decode()}{more}"


def shown_key(record):
    if record.key is None:
        return ""
    try:
        return record.key.decode("utf-8")
    except UnicodeDecodeError:
        return "0x" + record.key.hex()


def key_candidates(text):
    """The keys an operator's typed key may stand for: its UTF-8 bytes, and for 0x followed by hex
    (as shown_key shows a key that is not text) those bytes too."""
    keys = [text.encode("utf-8")]
    if text.startswith("0x"):
        try:
            keys.append(bytes.fromhex(text[2:]))
        except ValueError:
            pass
    return keys


def view(record):
    """A record as a template shows it."""
    kind, text = shown_value(record)
    return {"partition": record.partition, "offset": record.offset, "key": shown_key(record),
            "timestamp": record.timestamp, "headers": sorted((record.headers or {}).items()),
            "kind": kind, "value": text, "size": 0 if record.value is None else len(record.value),
            "origin": _origin(record.headers or {})}


def _origin(headers):
    topic = headers.get(types.DLQ_ORIGINAL_TOPIC)
    if not topic:
        return None
    return {"topic": topic, "partition": headers.get(types.DLQ_ORIGINAL_PARTITION),
            "offset": headers.get(types.DLQ_ORIGINAL_OFFSET), "group": headers.get(types.DLQ_GROUP),
            "attempts": headers.get(types.DLQ_ATTEMPTS), "error": headers.get(types.DLQ_ERROR),
            "failed_at": headers.get(types.DLQ_FAILED_AT)}


def page(topic, partition, offset, limit):
    """One page of a partition from offset (or its start), through the engine's remote read."""
    start, log_start, log_end, rows = remote.read(topic, partition, offset=offset, max_records=limit)
    return {"start": start, "log_start": log_start, "log_end": log_end,
            "records": [view(r) for r in rows], "next": rows[-1].offset + 1 if rows else None}
