"""The shared Klaviyo body validator: spec conversion, the fast path, readable issues, speed."""

from __future__ import annotations

import copy
import random
import time

import pytest

from portal.sandbox import schemas
from tests.sandbox.helpers import SAMPLE_EVENT, bulk_body, sample_event

pytestmark = pytest.mark.filterwarnings("error")

ACCOUNTS_RESPONSE = {"data": [{
    "type": "account", "id": "SBX01HXYZ",
    "attributes": {
        "test_account": False,
        "contact_information": {
            "default_sender_name": "S", "default_sender_email": "s@festival.test", "website_url": None,
            "organization_name": "S", "street_address": {"address1": None, "city": "Boston", "country": "US"}},
        "industry": None, "timezone": "America/New_York", "preferred_currency": "USD",
        "public_api_key": "SbX123", "locale": "en-US"},
    "links": {"self": "http://127.0.0.1/api/accounts/SBX01HXYZ/"}}],
    "links": {"self": "http://127.0.0.1/api/accounts/"}}

CASES = [
    ("create_event.json", "EventCreateQueryV2", True, SAMPLE_EVENT),
    ("bulk_create_events.json", "EventsBulkCreateJob", True, bulk_body(2, 2)),
    ("get_accounts.json", "GetAccountResponseCollection", False, ACCOUNTS_RESPONSE),
]


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, prefix + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, prefix + (index,))


def _mutate(body, rng: random.Random):
    body = copy.deepcopy(body)
    path = rng.choice([p for p in _paths(body) if p])
    parent = body
    for key in path[:-1]:
        parent = parent[key]
    key = path[-1]
    choice = rng.randrange(9)
    if choice == 0 and isinstance(parent, dict):
        del parent[key]
    elif choice == 1 and isinstance(parent, dict):
        parent["zz_unknown"] = 1
    else:
        parent[key] = [None, 5, 1.5, True, "x", [], {}, {"location": None}, ["x"]][choice - 1 if choice else 0]
    return body


@pytest.mark.parametrize("filename, name, strict, valid", CASES, ids=[c[1] for c in CASES])
def test_fast_path_agrees_with_jsonschema(filename, name, strict, valid):
    """The compiled yes/no check and jsonschema must never disagree."""
    fast = schemas._fast_check(filename, name, strict)
    slow = schemas._validator(filename, name, strict)
    assert fast(valid) and slow.is_valid(valid)
    rng = random.Random(20260715)
    disagreements = []
    for _ in range(1500):
        body = _mutate(valid, rng)
        if fast(body) != slow.is_valid(body):
            disagreements.append(body)
    assert disagreements == []


def test_nullable_fields_accept_null_and_refs_stay_strict():
    body = sample_event(time=None, value=None, value_currency=None, unique_id="u1")
    body["data"]["attributes"]["profile"]["data"]["attributes"].update(location=None, phone_number=None)
    assert schemas.validate_create_event(body) == []
    body["data"]["attributes"]["profile"]["data"]["attributes"]["location"] = {"city": "Oslo", "town": "x"}
    (issue,) = schemas.validate_create_event(body)
    assert issue.pointer == "/data/attributes/profile/data/attributes/location/town"
    assert "not a valid field" in issue.message


def test_issues_are_readable():
    body = sample_event(value="12")
    (issue,) = schemas.validate_create_event(body)
    assert issue.pointer == "/data/attributes/value"
    assert issue.message == "Invalid value '12': expected a number or null."
    assert str(issue) == "/data/attributes/value: Invalid value '12': expected a number or null."


def test_accounts_response_validation():
    assert schemas.validate_accounts_response(ACCOUNTS_RESPONSE) == []
    broken = copy.deepcopy(ACCOUNTS_RESPONSE)
    del broken["data"][0]["attributes"]["public_api_key"]
    (issue,) = schemas.validate_accounts_response(broken)
    assert issue.pointer == "/data/0/attributes/public_api_key"


def test_phone_and_email_rules():
    assert schemas.phone_problem("+15005550006") is None
    assert schemas.phone_problem("+1 500 555 0006") is not None
    assert schemas.email_problem("ada.l+tickets@festival.test") is None
    assert schemas.email_problem("ada@@festival.test") is not None
    assert schemas.email_problem("ada@festival") is not None
    assert schemas.is_test_email("Someone@Example.COM") and not schemas.is_test_email("a@festival.test")


def test_bulk_of_1000_validates_fast():
    body = bulk_body(1000)
    for entry in body["data"]["attributes"]["events-bulk-create"]["data"]:
        n = entry["attributes"]["profile"]["data"]["attributes"]["last_name"]
        entry["attributes"]["profile"]["data"]["attributes"]["phone_number"] = f"+1415555{int(n):04d}"
    schemas.validate_bulk_create(bulk_body(1))  # build the validators once
    started = time.perf_counter()
    assert schemas.validate_bulk_create(body) == []
    elapsed = time.perf_counter() - started
    assert elapsed < 0.5, f"validating 1,000 events took {elapsed:.3f}s"
