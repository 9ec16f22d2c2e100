"""Strict input: unknown fields and values of the wrong JSON type are refused, never coerced."""
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from queueing import exceptions, offsets


class Strict(serializers.Serializer):
    """A serializer that refuses the fields it does not declare (a misspelt "partiton" is an error)."""

    def to_internal_value(self, data):
        unknown = {name: ["unknown field"] for name in sorted(set(data) - set(self.fields))} \
            if isinstance(data, dict) else {}
        try:
            value = super().to_internal_value(data)
        except serializers.ValidationError as error:
            # Every problem at once: the unknown fields beside the known ones' errors.
            if unknown and isinstance(error.detail, dict):
                raise serializers.ValidationError({**error.detail, **unknown}) from None
            raise
        if unknown:
            raise serializers.ValidationError(unknown)
        return value


class Text(serializers.CharField):
    """A JSON string; a number is refused rather than turned into text."""

    default_error_messages = {"invalid": "a string is expected"}

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class Integer(serializers.IntegerField):
    """A JSON integer; "1", 1.5 and true are refused."""

    default_error_messages = {"invalid": "an integer is expected"}

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class Number(serializers.FloatField):
    """A JSON number; "1" and true are refused."""

    default_error_messages = {"invalid": "a number is expected"}

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, (int, float)):
            self.fail("invalid")
        return super().to_internal_value(data)


class Boolean(serializers.BooleanField):
    """A JSON true or false; "yes" and 1 are refused."""

    default_error_messages = {"invalid": "true or false is expected"}

    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("invalid")
        return data


class Choice(serializers.ChoiceField):
    """One of the given strings."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid_choice", input=data)
        return super().to_internal_value(data)


class URL(serializers.URLField):
    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class Object(serializers.DictField):
    """A JSON object (DictField's own check), values validated by child."""


@extend_schema_field(OpenApiTypes.DATETIME)
class Moment(serializers.Field):
    """An ISO-8601 date and time with its zone (e.g. 2026-12-04T09:00:00Z); one without a zone is refused."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            raise serializers.ValidationError("an ISO-8601 date and time string is expected")
        try:
            return offsets.parse_datetime(data)
        except exceptions.InvalidArgument as error:
            raise serializers.ValidationError(error.data["reason"]) from None

    def to_representation(self, value):
        return value.isoformat()


class Array(serializers.JSONField):
    """A JSON array of any JSON values."""

    def to_internal_value(self, data):
        if not isinstance(data, list):
            raise serializers.ValidationError("a JSON array is expected")
        return data


class JSONObject(serializers.JSONField):
    """A JSON object of any JSON values."""

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            raise serializers.ValidationError("a JSON object is expected")
        return data
