"""Names, e-mail addresses and phone numbers: the one place that reads and checks them.

The checkout, the sales channels and the Klaviyo payloads all use these, so a buyer's details are held to
the same rules wherever they came from. Pure functions: no database, no network.
"""
import functools
import re
import unicodedata

import phonenumbers
from email_validator import EmailNotValidError, validate_email

NAME_MAX = 100
EMAIL_MAX = 99  # Klaviyo rejects e-mail addresses of 100 characters or more
PHONE_MAX = 30
# Klaviyo accepts events for addresses at these test domains (202) and then silently drops them, so they never
# reach a profile. The Klaviyo sandbox does the same (portal/sandbox/schemas.py TEST_EMAIL_DOMAINS).
KLAVIYO_DROPPED_DOMAINS = ("example.com", "example.org", "example.net", "test.com")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def normalize_email(email: str | None) -> str:
    """The form of an address used to compare two of them: trimmed, lower case."""
    return (email or "").strip().lower()


def klaviyo_drops(email: str | None) -> bool:
    """True for an address whose events Klaviyo accepts but does not keep (a test domain)."""
    local, at, domain = normalize_email(email).rpartition("@")
    return bool(local and at) and domain in KLAVIYO_DROPPED_DOMAINS


@functools.lru_cache(maxsize=4096)  # pure, and read several times per order (the form, then every payload)
def e164(phone: str | None, region: str = "US") -> str | None:
    """The phone number in E.164, or None when it cannot be read as a valid number.
    `region` is where a number written without a country code is taken to be."""
    if not phone or not phone.strip():
        return None
    try:
        parsed = phonenumbers.parse(phone.strip(), region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def check_name(value: str, label: str, required: bool = True) -> str | None:
    """What is wrong with a name as typed, or None."""
    if not value:
        return f"Enter {label}." if required else None
    if len(value) > NAME_MAX:
        return f"Use at most {NAME_MAX} characters."
    if _CONTROL.search(value) or any(unicodedata.category(ch) == "Cs" for ch in value):
        return "Remove the invisible control characters."
    return None


def clean_name(value: str) -> str:
    """A name from somewhere we cannot send back an error (a store's webhook): printable, trimmed, cut to size."""
    value = "".join(ch for ch in value if ch.isprintable()).strip()
    return value[:NAME_MAX]


def check_email(value: str, required: bool) -> tuple[str | None, str | None]:
    """Returns (normalized e-mail, error)."""
    if not value:
        return None, "Enter an e-mail address." if required else None
    if len(value) > EMAIL_MAX:
        return None, f"Use an e-mail address of at most {EMAIL_MAX} characters."
    try:
        checked = validate_email(value, check_deliverability=False)
    except EmailNotValidError:
        return None, "Enter a valid e-mail address, like name@example.com."
    return checked.normalized, None


def check_phone(value: str, region: str = "US") -> tuple[str | None, str | None]:
    """Returns (the number in E.164, error). An empty value is no number and no error."""
    if not value:
        return None, None
    if len(value) > PHONE_MAX:
        return None, "That phone number is too long."
    normalized = e164(value, region)
    if normalized is None:
        hint = "for numbers outside the US " if region == "US" else ""
        return None, f"Enter a valid phone number, with the country code {hint}(e.g. +44 20 7946 0958)."
    return normalized, None
