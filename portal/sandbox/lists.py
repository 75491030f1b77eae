"""Check Create List and Bulk Subscribe Profiles bodies as Klaviyo does, and the answers to list reads.

Two layers, as for events (see schemas.py): the official slices (``create_list.json``,
``bulk_subscribe_profiles.json``, ``get_lists.json``) with unknown fields rejected, then the rules Klaviyo
states in prose:

* "Maximum number of profiles can be submitted for subscription: 1000", and at least one;
* each profile has an identifier, a valid e-mail and an E.164 phone number (as for events);
* an e-mail subscription needs the profile's ``email``, an SMS one its ``phone_number``;
* ``consented_at`` "should only be used when syncing over historical consent info to Klaviyo; if the
  ``historical_import`` flag is not included, providing any value for this field will raise an error";
* with ``historical_import``, "the consented_at field is required and must be in the past";
* a list needs a name.

Used by the sandbox's endpoints and by the portal's tests, which prove the portal's bodies valid.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from portal.sandbox.schemas import (
    ValidationIssue, _raise_if, parse_event_time, pointer, profile_issues, schema_issues,
)

MAX_PROFILES = 1000
MAX_LIST_NAME = 255
CHANNELS = ("email", "sms")  # what the sandbox subscribes; WhatsApp and push are refused plainly


def validate_create_list(body: Any) -> list[ValidationIssue]:
    """Problems with a Create List body (``POST /api/lists``); empty when valid."""
    issues = schema_issues("create_list.json", "ListCreateQuery", body)
    if issues:
        return issues
    name = body["data"]["attributes"]["name"]
    where = pointer(["data", "attributes", "name"])
    if not name.strip():
        return [ValidationIssue(where, "A list needs a name.")]
    if len(name) > MAX_LIST_NAME:
        return [ValidationIssue(where, f"A list name can have at most {MAX_LIST_NAME} characters.")]
    return []


def subscribed_profiles(body: dict):
    """Yield ``(index, profile)`` for a schema-valid Bulk Subscribe Profiles body."""
    yield from enumerate(body["data"]["attributes"]["profiles"]["data"])


def _consent_issues(parameters: dict | None, path: list, historical: bool, now: datetime) -> list[ValidationIssue]:
    """Rules for one channel's ``marketing`` (or ``transactional``) parameters."""
    if parameters is None:
        return []
    given = parameters.get("consented_at")
    here = pointer(path + ["consented_at"])
    if not historical:
        if given is not None:
            return [ValidationIssue(here, "consented_at can only be given when historical_import is true.")]
        return []
    moment = parse_event_time(given) if isinstance(given, str) else None
    if moment is None:
        return [ValidationIssue(here, "Historical subscription does not have a valid consented_at timestamp: "
                                      "give the time consent was collected, in ISO 8601 with a timezone.")]
    if moment > now:
        return [ValidationIssue(here, "consented_at must be in the past for a historical import.")]
    return []


def _profile_subscription_issues(profile: dict, path: list, historical: bool, now: datetime) -> list[ValidationIssue]:
    attributes = profile["attributes"]
    channels = attributes["subscriptions"] or {}
    issues = profile_issues(profile, path)
    given = [name for name, value in channels.items() if value is not None]
    if not given:
        issues.append(ValidationIssue(pointer(path + ["attributes", "subscriptions"]),
                                      "Give at least one channel to subscribe the profile to (email or sms)."))
    for name in given:
        where = path + ["attributes", "subscriptions", name]
        if name not in CHANNELS:
            issues.append(ValidationIssue(pointer(where), f"This sandbox subscribes to email and SMS only, not {name}."))
            continue
        identifier = "email" if name == "email" else "phone_number"
        if not attributes.get(identifier):
            issues.append(ValidationIssue(pointer(path + ["attributes", identifier]),
                                          f"'{identifier}' is required to subscribe the profile to {name} marketing."))
        kinds = ("marketing", "open_tracking") if name == "email" else ("marketing", "transactional")
        if all(channels[name].get(kind) is None for kind in kinds):
            issues.append(ValidationIssue(pointer(where), f"Say which {name} consent to give ({' or '.join(kinds)})."))
        for kind in ("marketing", "transactional"):
            issues += _consent_issues(channels[name].get(kind), where + [kind], historical, now)
    return issues


def validate_bulk_subscribe(body: Any, *, now: datetime | None = None) -> list[ValidationIssue]:
    """Problems with a Bulk Subscribe Profiles body (``POST /api/profile-subscription-bulk-create-jobs``)."""
    issues = schema_issues("bulk_subscribe_profiles.json", "SubscriptionCreateJobCreateQuery", body)
    if issues:
        return issues
    now = now or datetime.now(UTC)
    attributes = body["data"]["attributes"]
    profiles = attributes["profiles"]["data"]
    profiles_path = ["data", "attributes", "profiles", "data"]
    if not profiles:
        return [ValidationIssue(pointer(profiles_path), "At least one profile is required.")]
    if len(profiles) > MAX_PROFILES:
        return [ValidationIssue(pointer(profiles_path),
                                f"At most {MAX_PROFILES} profiles can be subscribed at once; got {len(profiles)}.")]
    historical = attributes.get("historical_import") is True
    for index, profile in subscribed_profiles(body):
        issues += _profile_subscription_issues(profile, profiles_path + [index], historical, now)
    return issues


def list_relationship(body: dict) -> str | None:
    """The list a schema-valid Bulk Subscribe Profiles body names, or None."""
    data = ((body["data"].get("relationships") or {}).get("list") or {}).get("data")
    return data["id"] if data else None


def validate_lists_response(body: Any) -> list[ValidationIssue]:
    """Problems with a ``GET /api/lists`` answer (GetListListResponseCollectionCompoundDocument)."""
    return schema_issues("get_lists.json", "GetListListResponseCollectionCompoundDocument", body, strict=False)


def validate_list_created(body: Any) -> list[ValidationIssue]:
    """Problems with a ``POST /api/lists`` answer (PostListCreateResponse)."""
    return schema_issues("create_list.json", "PostListCreateResponse", body, strict=False)


def assert_valid_bulk_subscribe(body: Any) -> None:
    """Fail a test with a readable list of problems unless ``body`` is a valid Bulk Subscribe Profiles body."""
    _raise_if(validate_bulk_subscribe(body), "Bulk Subscribe Profiles body")


def assert_valid_create_list(body: Any) -> None:
    """Fail a test unless ``body`` is a valid Create List body."""
    _raise_if(validate_create_list(body), "Create List body")
