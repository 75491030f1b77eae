"""Check Klaviyo request and response bodies against the vendored OpenAPI slices.

Used by the Klaviyo sandbox (to answer like Klaviyo does) and by the portal's tests (to
prove that what the portal builds would be accepted). Two layers:

* the JSON Schema layer: the OpenAPI 3.0 schemas in ``openapi/`` converted to JSON
  Schema Draft 2020-12. Request bodies are checked strictly: a field the schema does not
  name is an error, as Klaviyo answers "'x' is not a valid field for the resource 'profile'";
* the semantic layer: the rules Klaviyo documents in prose (an identifier is required, the
  email and phone must be valid, time range, size limits, ...).

Every problem comes back as a ``ValidationIssue`` with a JSON pointer into the body.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from jsonschema import Draft202012Validator

OPENAPI_DIR = Path(__file__).with_name("openapi")
SPEC_REVISION = "2026-07-15"

MAX_EVENTS_PER_BULK = 1000
MAX_PAYLOAD_BYTES = 5 * 1024 * 1024
MAX_STRING_BYTES = 100 * 1024
MAX_PROPERTIES = 400
MAX_ARRAY_ITEMS = 4000
MAX_NESTING = 10
MAX_METRIC_NAME = 127  # "must be less than 128 characters"
MAX_EMAIL = 99  # "valid and under 100 characters"
MAX_UNIQUE_ID = 255
EARLIEST_TIME = datetime(1990, 1, 1, tzinfo=UTC)

# Domains whose events Klaviyo accepts with 202 and then silently drops.
TEST_EMAIL_DOMAINS = frozenset({"example.com", "example.org", "example.net", "test.com"})

_TIME_RE = re.compile(
    r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:?\d{2})$"
)
_E164_RE = re.compile(r"^\+[1-9]\d{1,14}$")
_CURRENCY_RE = re.compile(r"^[A-Z]{3}$")
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_DOT_ATOM_RE = re.compile(rf"^{_ATEXT}(\.{_ATEXT})*$")


@dataclass(frozen=True)
class ValidationIssue:
    """One problem in a body: where it is (JSON pointer) and what is wrong."""

    pointer: str
    message: str

    def __str__(self) -> str:
        return f"{self.pointer or '/'}: {self.message}"


# ---------------------------------------------------------------------------
# OpenAPI 3.0 -> JSON Schema
# ---------------------------------------------------------------------------

_OPENAPI_ONLY_KEYS = ("nullable", "example", "discriminator", "xml", "externalDocs")
_SCHEMA_MAPS = ("properties", "patternProperties")
_SCHEMA_LISTS = ("allOf", "anyOf", "oneOf")
_SCHEMA_SINGLE = ("items", "additionalProperties", "not")


def _convert(node: Any, strict: bool) -> Any:
    """Turn one OpenAPI 3.0 schema node into JSON Schema 2020-12.

    ``nullable: true`` becomes "or null". Next to a ``$ref`` it is wrapped in ``anyOf``,
    because in OpenAPI 3.0 a ``$ref``'s siblings are ignored while Klaviyo clearly means
    "this object, or null". With ``strict``, objects that list their properties reject
    unknown ones, as Klaviyo's JSON:API parser does.
    """
    nullable = node.get("nullable") is True
    out: dict = {}
    for key, value in node.items():
        if key in _OPENAPI_ONLY_KEYS or key.startswith("x-"):
            continue
        if key in _SCHEMA_MAPS:
            out[key] = {name: _convert(sub, strict) for name, sub in value.items()}
        elif key == "oneOf" and all(set(sub) <= {"type", "description"} for sub in value):
            # "oneOf: integer | number" means either: 2 is both, and Klaviyo accepts it.
            out["anyOf"] = [_convert(sub, strict) for sub in value]
        elif key in _SCHEMA_LISTS:
            out[key] = [_convert(sub, strict) for sub in value]
        elif key in _SCHEMA_SINGLE and isinstance(value, dict):
            out[key] = _convert(value, strict)
        else:
            out[key] = value
    if strict and "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    if not nullable:
        return out
    if "$ref" in out:
        ref = {"$ref": out.pop("$ref")}
        return {**out, "anyOf": [ref, {"type": "null"}]}
    if isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
        return out
    for combiner in ("oneOf", "anyOf"):
        if combiner in out:
            out[combiner] = [*out[combiner], {"type": "null"}]
            return out
    return out


@cache
def _document(filename: str) -> dict:
    with open(OPENAPI_DIR / filename, encoding="utf-8") as fh:
        return json.load(fh)


@cache
def _validator(filename: str, schema_name: str, strict: bool) -> Draft202012Validator:
    """Build (once) a validator whose root is ``schema_name``.

    The converted ``components`` ride along in the root document, so the spec's own
    ``#/components/schemas/...`` references resolve unchanged.
    """
    components = copy.deepcopy(_document(filename)["components"]["schemas"])
    converted = {name: _convert(schema, strict) for name, schema in components.items()}
    root = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$ref": f"#/components/schemas/{schema_name}",
        "components": {"schemas": converted},
    }
    Draft202012Validator.check_schema(root)
    return Draft202012Validator(root)


def openapi_operation(filename: str) -> dict:
    """The single operation object of one vendored slice (for rate limits and scopes)."""
    (path_item,) = _document(filename)["paths"].values()
    (operation,) = path_item.values()
    return operation


# ---------------------------------------------------------------------------
# Fast path: a compiled yes/no check
# ---------------------------------------------------------------------------
# jsonschema walks a 1,000-event bulk body in about 0.6 s, too slow for a sandbox that
# must answer like Klaviyo under load. The converted schemas use only a handful of
# keywords, so they are compiled into plain closures that answer "valid or not";
# jsonschema runs only on bodies that fail, to explain why.

_IGNORED_KEYWORDS = {"description", "default", "format", "title", "$schema", "components", "readOnly",
                     "writeOnly"}


_PY_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None),
             "number": (int, float)}


def _type_check(names: list[str]):
    """``isinstance`` against the JSON types; true/false never count as numbers."""
    unknown = set(names) - set(_PY_TYPES) - {"integer"}
    if unknown:
        raise ValueError(f"cannot compile types {sorted(unknown)}")
    accepted: tuple = ()
    for name in names:
        if name == "integer":
            continue
        kind = _PY_TYPES[name]
        accepted += kind if isinstance(kind, tuple) else (kind,)
    if "integer" in names and "number" not in names:
        # JSON Schema's integer: a number with no fraction (1.0 counts), never true/false.
        def check(v):
            if isinstance(v, accepted) and (v.__class__ is not bool or "boolean" in names):
                return True
            return v.__class__ is not bool and (isinstance(v, int) or (isinstance(v, float) and v.is_integer()))
        return check
    if "number" in names and "boolean" not in names:
        return lambda v: isinstance(v, accepted) and v.__class__ is not bool
    return lambda v: isinstance(v, accepted)


def _all_of(checks: list):
    if len(checks) == 1:
        return checks[0]
    if len(checks) == 2:
        first, second = checks
        return lambda v: first(v) and second(v)

    def check(v):
        for c in checks:
            if not c(v):
                return False
        return True
    return check


def _compile(schema: dict, root: dict, memo: dict):
    """Compile one converted schema into ``check(instance) -> bool``."""
    unknown = set(schema) - _IGNORED_KEYWORDS - {
        "type", "enum", "properties", "required", "additionalProperties", "items",
        "anyOf", "oneOf", "$ref"}
    if unknown:
        raise ValueError(f"cannot compile keywords {sorted(unknown)}")
    checks = []
    if "$ref" in schema:
        ref = schema["$ref"]
        if ref not in memo:
            memo[ref] = None  # placeholder for (unused here) recursive schemas
            target = root
            for part in ref.removeprefix("#/").split("/"):
                target = target[part]
            memo[ref] = _compile(target, root, memo)
        checks.append(lambda v, ref=ref: memo[ref](v))
    if "type" in schema:
        checks.append(_type_check([schema["type"]] if isinstance(schema["type"], str) else schema["type"]))
    if "enum" in schema:
        allowed = schema["enum"]
        checks.append(lambda v: any(type(v) is type(a) and v == a for a in allowed))
    props = {k: _compile(sub, root, memo) for k, sub in schema.get("properties", {}).items()}
    required = tuple(schema.get("required", ()))
    closed = schema.get("additionalProperties") is False
    if props or required or closed:
        def check_object(v):
            if not isinstance(v, dict):
                return True
            for key in required:
                if key not in v:
                    return False
            for key, item in v.items():
                sub = props.get(key)
                if sub is None:
                    if closed:
                        return False
                elif not sub(item):
                    return False
            return True
        checks.append(check_object)
    if isinstance(schema.get("items"), dict):
        item_check = _compile(schema["items"], root, memo)

        def check_items(v):
            if isinstance(v, list):
                for item in v:
                    if not item_check(item):
                        return False
            return True
        checks.append(check_items)
    if "anyOf" in schema:
        branches = [_compile(sub, root, memo) for sub in schema["anyOf"]]
        checks.append(lambda v: any(b(v) for b in branches))
    if "oneOf" in schema:
        branches = [_compile(sub, root, memo) for sub in schema["oneOf"]]
        checks.append(lambda v: sum(1 for b in branches if b(v)) == 1)
    return _all_of(checks)


@cache
def _fast_check(filename: str, schema_name: str, strict: bool):
    root = _validator(filename, schema_name, strict).schema
    return _compile(root, root, {})


# ---------------------------------------------------------------------------
# Turning jsonschema errors into issues
# ---------------------------------------------------------------------------


def pointer(path: Iterable[Any]) -> str:
    """JSON pointer (RFC 6901) for a path of keys and indexes."""
    parts = [str(p).replace("~", "~0").replace("/", "~1") for p in path]
    return "".join("/" + p for p in parts)


def _resource_type(body: Any, path: list) -> str:
    """The JSON:API ``type`` of the resource that contains ``path`` (e.g. 'profile')."""
    for cut in range(len(path), -1, -1):
        node = body
        try:
            for key in path[:cut]:
                node = node[key]
        except (KeyError, IndexError, TypeError):
            continue
        if isinstance(node, dict) and isinstance(node.get("type"), str):
            return node["type"]
    return "resource"


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_TYPE_WORDS = {"object": "an object", "array": "a list", "string": "a string",
               "number": "a number", "integer": "an integer", "boolean": "true or false",
               "null": "null"}


def _type_issue(path: list, instance: Any, wanted: list[str]) -> ValidationIssue:
    words = " or ".join(_TYPE_WORDS.get(w, w) for w in wanted)
    return ValidationIssue(pointer(path), f"Invalid value {_short(instance)}: expected {words}.")


def _issues_from_error(error, body: Any) -> list[ValidationIssue]:
    path = list(error.absolute_path)
    kind = error.validator
    if kind in ("anyOf", "oneOf") and error.context and all(
            e.validator == "type" and len(e.absolute_path) == len(path) for e in error.context):
        # Every branch wanted another type: say which types would do.
        wanted: list[str] = []
        for e in error.context:
            for name in [e.validator_value] if isinstance(e.validator_value, str) else e.validator_value:
                if name not in wanted:
                    wanted.append(name)
        return [_type_issue(path, error.instance, wanted)]
    if kind in ("anyOf", "oneOf") and error.instance is not None:
        # Nullable wrappers: report why the non-null branch failed, not "not valid under any".
        branches = [e for e in error.context
                    if not (e.validator == "type" and e.validator_value == "null")]
        if branches:
            deepest = max(len(e.absolute_path) for e in branches)
            if deepest > len(path) or kind == "anyOf":
                out: list[ValidationIssue] = []
                for sub in branches:
                    if len(sub.absolute_path) == deepest:
                        out.extend(_issues_from_error(sub, body))
                if out:
                    return out
    if kind == "required":
        missing = re.match(r"'(.+)' is a required property", error.message)
        name = missing.group(1) if missing else str(error.message)
        return [ValidationIssue(pointer(path + [name]),
                                f"'{name}' is a required field for the resource "
                                f"'{_resource_type(body, path)}'.")]
    if kind == "additionalProperties":
        allowed = set(error.schema.get("properties", {}))
        extra = sorted(k for k in error.instance if k not in allowed)
        resource = _resource_type(body, path)
        return [ValidationIssue(pointer(path + [k]),
                                f"'{k}' is not a valid field for the resource '{resource}'.")
                for k in extra]
    if kind == "type":
        wanted = error.validator_value
        return [_type_issue(path, error.instance, [wanted] if isinstance(wanted, str) else wanted)]
    if kind == "enum":
        choices = ", ".join(repr(c) for c in error.validator_value if c is not None)
        return [ValidationIssue(pointer(path),
                                f"Invalid value {_short(error.instance)}: must be {choices}.")]
    return [ValidationIssue(pointer(path), error.message[:300])]


def _schema_issues(filename: str, schema_name: str, strict: bool, body: Any) -> list[ValidationIssue]:
    if _fast_check(filename, schema_name, strict)(body):
        return []
    validator = _validator(filename, schema_name, strict)
    issues: list[ValidationIssue] = []
    for error in sorted(validator.iter_errors(body), key=lambda e: list(map(str, e.absolute_path))):
        issues.extend(_issues_from_error(error, body))
    return issues


def schema_issues(filename: str, schema_name: str, body: Any, *, strict: bool = True) -> list[ValidationIssue]:
    """Problems with ``body`` against one schema of a vendored slice (strict: unknown fields too)."""
    return _schema_issues(filename, schema_name, strict, body)


# ---------------------------------------------------------------------------
# Semantic rules (documented in prose, not in the schema)
# ---------------------------------------------------------------------------


def parse_event_time(text: str) -> datetime | None:
    """Parse an ISO 8601 / RFC 3339 time that carries a timezone, else None."""
    if not isinstance(text, str) or not _TIME_RE.match(text):
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def _one_year_ahead(now: datetime) -> datetime:
    try:
        return now.replace(year=now.year + 1)
    except ValueError:  # 29 February
        return now.replace(year=now.year + 1, day=28)


@lru_cache(maxsize=4096)
def email_problem(email: str) -> str | None:
    """Why Klaviyo would refuse this email, or None when it is acceptable."""
    if len(email) > MAX_EMAIL:
        return "Email must be under 100 characters."
    local, at, domain = email.rpartition("@")
    if at and _DOT_ATOM_RE.match(local) and len(local) <= 64 and _domain_problem(domain) is None:
        # A plain ASCII local part needs no more checks, and the domain's answer is
        # cached: a bulk request with a thousand buyers usually has a handful of domains.
        return None
    try:
        # test_environment allows the reserved .test domain (used by our own fixtures)
        # and skips DNS: the sandbox never touches the network.
        validate_email(email, check_deliverability=False, test_environment=True)
    except EmailNotValidError as exc:
        return f"Invalid email address {_short(email)}: {exc}"
    return None


@lru_cache(maxsize=1024)
def _domain_problem(domain: str) -> str | None:
    try:
        validate_email("a@" + domain, check_deliverability=False, test_environment=True)
    except EmailNotValidError as exc:
        return str(exc)
    return None


@lru_cache(maxsize=4096)
def phone_problem(phone: str) -> str | None:
    """Why Klaviyo would refuse this phone number (must be valid E.164), or None."""
    if not _E164_RE.match(phone):
        return f"Invalid phone number {_short(phone)}: it must be in E.164 format, like +15005550006."
    try:
        number = phonenumbers.parse(phone, None)
    except phonenumbers.NumberParseException:
        return f"Invalid phone number {_short(phone)}."
    if not phonenumbers.is_valid_number(number):
        return f"Invalid phone number {_short(phone)}: not a valid number."
    return None


def _walk_limits(value: Any, path: list, depth: int, issues: list) -> None:
    """Size rules that apply to any value: strings ≤ 100 KB, arrays ≤ 4000, nesting ≤ 10."""
    if isinstance(value, str):
        if len(value) * 4 > MAX_STRING_BYTES and len(value.encode("utf-8")) > MAX_STRING_BYTES:
            issues.append(ValidationIssue(pointer(path), "A single string cannot exceed 100KB."))
    elif isinstance(value, dict):
        if depth > MAX_NESTING:
            issues.append(ValidationIssue(pointer(path), "Objects may be nested at most 10 levels deep."))
            return
        for key, item in value.items():
            _walk_limits(item, path + [key], depth + 1, issues)
    elif isinstance(value, list):
        if len(value) > MAX_ARRAY_ITEMS:
            issues.append(ValidationIssue(pointer(path), "Arrays cannot have more than 4000 items."))
        if depth > MAX_NESTING:
            issues.append(ValidationIssue(pointer(path), "Objects may be nested at most 10 levels deep."))
            return
        for index, item in enumerate(value):
            _walk_limits(item, path + [index], depth + 1, issues)


def profile_issues(profile: dict, path: list) -> list[ValidationIssue]:
    """Identifier rules for a profile resource object (``{"type": "profile", ...}``)."""
    issues: list[ValidationIssue] = []
    attrs = profile.get("attributes") or {}
    email, phone, ident = attrs.get("email"), attrs.get("phone_number"), profile.get("id")
    if not (email or phone or ident):
        issues.append(ValidationIssue(
            pointer(path + ["attributes"]),
            "A profile identifier is required: one of 'id', 'email' or 'phone_number'."))
    if email:
        problem = email_problem(email)
        if problem:
            issues.append(ValidationIssue(pointer(path + ["attributes", "email"]), problem))
    if phone:
        problem = phone_problem(phone)
        if problem:
            issues.append(ValidationIssue(pointer(path + ["attributes", "phone_number"]), problem))
    _walk_limits(profile, path, 0, issues)
    return issues


def event_attribute_issues(attrs: dict, path: list, now: datetime | None = None) -> list[ValidationIssue]:
    """Rules for an event's ``attributes`` (metric, time, unique_id, properties, value)."""
    issues: list[ValidationIssue] = []
    now = now or datetime.now(UTC)
    name = attrs["metric"]["data"]["attributes"]["name"]
    name_path = path + ["metric", "data", "attributes", "name"]
    if not name.strip():
        issues.append(ValidationIssue(pointer(name_path), "Metric name cannot be empty."))
    elif len(name) > MAX_METRIC_NAME:
        issues.append(ValidationIssue(pointer(name_path), "Metric name must be less than 128 characters."))
    time_text = attrs.get("time")
    if time_text is not None:
        moment = parse_event_time(time_text)
        if moment is None:
            issues.append(ValidationIssue(
                pointer(path + ["time"]),
                f"Invalid time {_short(time_text)}: use ISO 8601 with a timezone, "
                "like 2022-11-08T00:00:00+00:00."))
        elif moment <= EARLIEST_TIME:
            issues.append(ValidationIssue(pointer(path + ["time"]), "The time must be after the year 1990."))
        elif moment > _one_year_ahead(now):
            issues.append(ValidationIssue(pointer(path + ["time"]),
                                          "The time can only be up to 1 year in the future."))
    unique_id = attrs.get("unique_id")
    if unique_id is not None and not (1 <= len(unique_id) <= MAX_UNIQUE_ID):
        issues.append(ValidationIssue(pointer(path + ["unique_id"]),
                                      "unique_id must be 1 to 255 characters long."))
    currency = attrs.get("value_currency")
    if currency is not None and not _CURRENCY_RE.match(currency):
        issues.append(ValidationIssue(pointer(path + ["value_currency"]),
                                      f"Invalid currency {_short(currency)}: use an ISO 4217 code like USD."))
    properties = attrs["properties"]
    if len(properties) > MAX_PROPERTIES:
        issues.append(ValidationIssue(pointer(path + ["properties"]),
                                      "An event cannot have more than 400 properties."))
    _walk_limits(properties, path + ["properties"], 1, issues)
    for key in ("metric", "unique_id", "value_currency"):
        if isinstance(attrs.get(key), str):
            _walk_limits(attrs[key], path + [key], 0, issues)
    return issues


def _payload_size_issue(body: Any) -> list[ValidationIssue]:
    size = len(json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
    if size > MAX_PAYLOAD_BYTES:
        return [ValidationIssue("", "The payload cannot be larger than 5MB.")]
    return []


# ---------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------


def validate_create_event(body: Any, *, semantic: bool = True, now: datetime | None = None,
                          check_size: bool = True) -> list[ValidationIssue]:
    """Problems with a Create Event body (``POST /api/events``); empty when valid.

    ``semantic=False`` checks the schema only; ``check_size=False`` skips the 5 MB check
    (for callers that already measured the raw body).
    """
    issues = _schema_issues("create_event.json", "EventCreateQueryV2", True, body)
    if issues or not semantic:
        return issues
    attrs = body["data"]["attributes"]
    base = ["data", "attributes"]
    issues += profile_issues(attrs["profile"]["data"], base + ["profile", "data"])
    issues += event_attribute_issues(attrs, base, now)
    return issues or (_payload_size_issue(body) if check_size else [])


def bulk_events(body: dict):
    """Yield ``(entry_index, event_index, entry, event)`` for a schema-valid bulk body."""
    entries = body["data"]["attributes"]["events-bulk-create"]["data"]
    for i, entry in enumerate(entries):
        for j, event in enumerate(entry["attributes"]["events"]["data"]):
            yield i, j, entry, event


def validate_bulk_create(body: Any, *, semantic: bool = True, now: datetime | None = None,
                         check_size: bool = True) -> list[ValidationIssue]:
    """Problems with a Bulk Create Events body (``POST /api/event-bulk-create-jobs``)."""
    issues = _schema_issues("bulk_create_events.json", "EventsBulkCreateJob", True, body)
    if issues or not semantic:
        return issues
    entries_path = ["data", "attributes", "events-bulk-create", "data"]
    entries = body["data"]["attributes"]["events-bulk-create"]["data"]
    total = sum(len(e["attributes"]["events"]["data"]) for e in entries)
    if total == 0:
        return [ValidationIssue(pointer(entries_path), "At least one event is required.")]
    if total > MAX_EVENTS_PER_BULK:
        return [ValidationIssue(pointer(entries_path),
                                f"Accepts up to 1,000 events per request; got {total}.")]
    now = now or datetime.now(UTC)
    for i, entry in enumerate(entries):
        entry_path = entries_path + [i, "attributes"]
        issues += profile_issues(entry["attributes"]["profile"]["data"], entry_path + ["profile", "data"])
        for j, event in enumerate(entry["attributes"]["events"]["data"]):
            issues += event_attribute_issues(event["attributes"],
                                             entry_path + ["events", "data", j, "attributes"], now)
    issues += duplicate_unique_id_issues(body)
    return issues or (_payload_size_issue(body) if check_size else [])


def profile_key(profile: dict) -> str:
    """Who an event is about, for deduplication: lower-cased email, else phone, else id."""
    attrs = profile.get("attributes") or {}
    if attrs.get("email"):
        return "email:" + attrs["email"].strip().lower()
    if attrs.get("phone_number"):
        return "phone:" + attrs["phone_number"]
    return "id:" + str(profile.get("id"))


def duplicate_unique_id_issues(body: dict) -> list[ValidationIssue]:
    """A unique_id repeated for the same profile and metric fails a whole bulk request."""
    seen: dict[tuple, str] = {}
    issues: list[ValidationIssue] = []
    for i, j, entry, event in bulk_events(body):
        attrs = event["attributes"]
        if attrs.get("unique_id") is None:
            continue
        key = (profile_key(entry["attributes"]["profile"]["data"]),
               attrs["metric"]["data"]["attributes"]["name"], attrs["unique_id"])
        here = pointer(["data", "attributes", "events-bulk-create", "data", i, "attributes",
                        "events", "data", j, "attributes", "unique_id"])
        if key in seen:
            issues.append(ValidationIssue(
                here, f"unique_id {_short(attrs['unique_id'])} is repeated for the same profile "
                      f"and metric (first at {seen[key]}); no events were processed."))
        else:
            seen[key] = here
    return issues


def validate_accounts_response(body: Any) -> list[ValidationIssue]:
    """Problems with a ``GET /api/accounts`` response body (GetAccountResponseCollection)."""
    return _schema_issues("get_accounts.json", "GetAccountResponseCollection", False, body)


def is_test_email(email: str | None) -> bool:
    """True for addresses whose events Klaviyo accepts (202) but silently drops."""
    if not email or "@" not in email:
        return False
    return email.rsplit("@", 1)[1].strip().lower() in TEST_EMAIL_DOMAINS


def _raise_if(issues: list[ValidationIssue], what: str) -> None:
    if issues:
        lines = "\n".join(f"  {issue}" for issue in issues)
        raise AssertionError(f"{what} would be rejected by Klaviyo:\n{lines}")


def assert_valid_create_event(body: Any) -> None:
    """Fail a test with a readable list of problems unless ``body`` is a valid Create Event."""
    _raise_if(validate_create_event(body), "Create Event body")


def assert_valid_bulk_create(body: Any) -> None:
    """Fail a test unless ``body`` is a valid Bulk Create Events body."""
    _raise_if(validate_bulk_create(body), "Bulk Create Events body")


def assert_valid_accounts_response(body: Any) -> None:
    """Fail a test unless ``body`` is a valid Get Accounts response."""
    _raise_if(validate_accounts_response(body), "Get Accounts response")
