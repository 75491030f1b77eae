"""Defaults for the Klaviyo sandbox: its OAuth app, its accounts and the scopes it knows."""

from __future__ import annotations

from pathlib import Path

from portal.sandbox import schemas

PROJECT_ROOT = Path(__file__).resolve().parents[2]

DEFAULT_ACCOUNT = {
    "id": "SBX01HXYZ",
    "organization_name": "Sandbox Festival Co.",
    "public_api_key": "SbX123",
    "timezone": "America/New_York",
    "preferred_currency": "USD",
    "locale": "en-US",
    "industry": "Events & Entertainment",
    "test_account": False,
    "default_sender_name": "Sandbox Festival Co.",
    "default_sender_email": "hello@sandbox-festival.test",
    "website_url": "https://sandbox-festival.test",
    "street_address": {
        "address1": "125 Summer Street",
        "address2": "5th Floor",
        "city": "Boston",
        "region": "MA",
        "country": "US",
        "zip": "02110",
    },
}

DEFAULTS = {
    "SANDBOX_DB": str(PROJECT_ROOT / "instance" / "sandbox.db"),
    "SANDBOX_CLIENT_ID": "sandbox-client-id",
    "SANDBOX_CLIENT_SECRET": "sandbox-client-secret",
    "SANDBOX_APP_NAME": "Festival Ticketing Portal",
    "SANDBOX_REDIRECT_URIS": [
        "http://127.0.0.1:5000/manage/integrations/klaviyo/callback",
        "http://localhost:5000/manage/integrations/klaviyo/callback",
    ],
    "SANDBOX_ACCESS_TOKEN_LIFETIME": 3600,
    "SANDBOX_CODE_LIFETIME": 60,
    # Klaviyo: a refresh token expires after 90 days without use.
    "SANDBOX_REFRESH_TOKEN_LIFETIME": 90 * 24 * 3600,
    "SANDBOX_CONSENT_LIFETIME": 600,
    "SANDBOX_ENFORCE_RATE_LIMITS": True,
    # Get Events shows an event only this many seconds after it arrived (Klaviyo's processing delay).
    "SANDBOX_EVENTS_VISIBLE_AFTER": 0,
    "SANDBOX_ACCOUNTS": [DEFAULT_ACCOUNT],
}

# What POST /_sandbox/config may change at run time: JSON key -> (config key, type).
RUNTIME_KEYS = {
    "access_token_lifetime": ("SANDBOX_ACCESS_TOKEN_LIFETIME", int),
    "code_lifetime": ("SANDBOX_CODE_LIFETIME", int),
    "refresh_token_lifetime": ("SANDBOX_REFRESH_TOKEN_LIFETIME", int),
    "enforce_rate_limits": ("SANDBOX_ENFORCE_RATE_LIMITS", bool),
    "client_secret": ("SANDBOX_CLIENT_SECRET", str),
    "app_name": ("SANDBOX_APP_NAME", str),
    "events_visible_after": ("SANDBOX_EVENTS_VISIBLE_AFTER", int),
}

_SCOPE_FAMILIES = (
    "lists", "segments", "campaigns", "catalogs", "coupons", "coupon-codes", "flows", "forms",
    "images", "push-tokens", "reviews", "subscriptions", "tags", "templates",
    "tracking-settings", "web-feeds", "webhooks", "conversations", "custom-objects",
    "events", "metrics", "profiles",
)
KNOWN_SCOPES = frozenset(
    {"accounts:read", "data-privacy:write"}
    | {f"{family}:{verb}" for family in _SCOPE_FAMILIES for verb in ("read", "write")}
)

# Plain words for the consent page; others fall back to "Read/Create and change your <family>".
SCOPE_WORDS = {
    "accounts:read": "See your account details (name, address, timezone and currency)",
    "events:read": "See the events (activity) recorded in your account",
    "events:write": "Record new events in your account, such as ticket purchases",
    "metrics:read": "See the metrics (event types) in your account",
    "profiles:read": "See the profiles (people) in your account",
    "profiles:write": "Create and update profiles in your account",
}


def scope_words(scope: str) -> str:
    if scope in SCOPE_WORDS:
        return SCOPE_WORDS[scope]
    family, _, verb = scope.partition(":")
    family = family.replace("-", " ")
    return f"See your {family}" if verb == "read" else f"Create and change your {family}"


def normalize_account(account: dict) -> dict:
    """Fill an account given in config with the default account's missing fields."""
    merged = {**DEFAULT_ACCOUNT, **account}
    merged["street_address"] = {**DEFAULT_ACCOUNT["street_address"], **account.get("street_address", {})}
    if "default_sender_name" not in account and "organization_name" in account:
        merged["default_sender_name"] = account["organization_name"]
    return merged


# The sandbox's rate-limit tiers: endpoint -> the vendored slice that names its scope and limits.
TIER_SLICES = {
    "accounts": "get_accounts.json", "events": "create_event.json", "bulk": "bulk_create_events.json",
    "metrics": "get_metrics.json", "flows_read": "get_flows.json", "flows_create": "create_flow.json",
    "segments_create": "create_segment.json", "events_read": "get_events.json",
    # lists and list subscriptions (lists_api.py)
    "lists_read": "get_lists.json", "lists_create": "create_list.json", "subscribe": "bulk_subscribe_profiles.json",
}


def daily_limits() -> dict[str, int]:
    """Endpoint -> requests allowed a day, for the endpoints whose slice gives a daily limit."""
    limits = {}
    for endpoint, filename in TIER_SLICES.items():
        daily = schemas.openapi_operation(filename)["x-klaviyo-ratelimit"].get("daily")
        if daily:
            limits[endpoint] = int(daily.removesuffix("/d"))
    return limits


def rate_limit_tiers() -> dict[str, tuple[str, int, int]]:
    """Endpoint -> (scopes, burst per second, steady per minute), read from the vendored spec. The scopes are
    space-separated: Bulk Subscribe Profiles needs three."""
    tiers = {}
    for endpoint, filename in TIER_SLICES.items():
        operation = schemas.openapi_operation(filename)
        limits = operation["x-klaviyo-ratelimit"]
        burst = int(limits["burst"].removesuffix("/s"))
        steady = int(limits["steady"].removesuffix("/m"))
        tiers[endpoint] = (" ".join(operation["x-klaviyo-scopes"]), burst, steady)
    return tiers
