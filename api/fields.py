"""Strict input: unknown fields and values of the wrong JSON type are refused, never coerced."""
from rest_framework import serializers


class Strict(serializers.Serializer):
    """A serializer that refuses the fields it does not declare (a misspelt "partiton" is an error)."""

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({name: ["unknown field"] for name in unknown})
        return super().to_internal_value(data)


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
