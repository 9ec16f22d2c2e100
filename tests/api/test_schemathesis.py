"""Schemathesis against the live API: every operation of the schema, with generated input, gets no
5xx and answers as the schema says (status codes, content types, headers and bodies)."""
import pytest
import schemathesis
from django.contrib.auth.models import User
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (content_type_conformance, response_headers_conformance,
                                               response_schema_conformance, status_code_conformance)

from api import keys
from queueing import producer, topics

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]
EXAMPLES = 12  # per operation: 2 cores are shared, and each example is a real request


@pytest.fixture
def authorization(transactional_db, settings):
    """A key allowed everything, and a little data for generated requests to find."""
    settings.SLUICE_API = dict(settings.SLUICE_API, THROTTLE_RATE="")
    settings.SLUICE_HALF_CALLBACK_ALLOW = ["payments.example"]
    topics.create_topic("orders")
    producer.send("orders", {"n": 1})
    user = User.objects.create_user("schemathesis")
    _, text = keys.create("schemathesis", user=user, scopes=["produce:*", "consume:*", "task:*", "operate"])
    return {"Authorization": f"Bearer {text}"}


def test_every_operation_answers_as_its_schema_says(live_server, authorization):
    schema = schemathesis.openapi.from_url(f"{live_server.url}/api/v1/schema/")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 16
    for operation in operations:
        @given(case=operation.as_strategy())
        @hypothesis_settings(max_examples=EXAMPLES, deadline=None, database=None,
                             suppress_health_check=list(HealthCheck))
        def answers(case):
            case.call_and_validate(headers=authorization, checks=CHECKS)

        answers()
