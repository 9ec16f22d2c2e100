"""The request body: JSON only, and no larger than SLUICE_API["MAX_BODY_BYTES"] (413 beyond)."""
import codecs
import json

from django.conf import settings
from rest_framework import exceptions, parsers

from api.errors import PayloadTooLarge


def max_body_bytes():
    return settings.SLUICE_API["MAX_BODY_BYTES"]


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, with the body's size bounded before it is read whole."""

    def parse(self, stream, media_type=None, parser_context=None):
        limit = max_body_bytes()
        request = (parser_context or {}).get("request")
        declared = request.META.get("CONTENT_LENGTH") if request is not None else None
        if declared and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge(f"the body is {declared} bytes; the limit is {limit}")
        data = stream.read(limit + 1) if stream is not None else b""
        if len(data) > limit:
            raise PayloadTooLarge(f"the body is larger than {limit} bytes")
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            return json.loads(codecs.decode(data, encoding), parse_constant=_refuse_constant)
        except (ValueError, LookupError) as error:
            raise exceptions.ParseError(f"the body is not valid JSON: {error}") from None


def _refuse_constant(name):
    raise ValueError(f"{name} is not JSON")
