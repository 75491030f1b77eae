"""Pure functions that turn a purchaser's marketing consent into Klaviyo's Bulk Subscribe Profiles bodies.

Nothing here touches the database or the network. A consent comes in as plain data; out comes a one-profile
job body, kept in the outbox, and at send time `bulk_subscribe_body` joins many of them into one request for
the organizer's chosen list. Bodies validate against the official slice (bulk_subscribe_profiles.json).

Klaviyo's rules, as the slice states them:
* consented_at may only be sent with historical_import: true, and then it is required and in the past. A live
  subscription therefore carries no time: Klaviyo records the moment it receives it, right after the purchase.
* custom_source and historical_import belong to the whole job, so a request only joins bodies that share them.
"""
import copy
from dataclasses import dataclass, field
from datetime import datetime

from portal.contact import e164
from portal.klaviyo.payloads import OutgoingEvent, iso_utc

LIST_SUBSCRIPTION = "List subscription"  # how an outbox row of this kind is named on the sync timeline
JOB_TYPE = "profile-subscription-bulk-create-job"
MAX_PROFILES = 1000  # "Maximum number of profiles can be submitted for subscription: 1000"
SUBSCRIBED = {"consent": "SUBSCRIBED"}


@dataclass(frozen=True)
class Consent:
    """What one purchaser agreed to, as the builders need it."""

    order_id: int
    email: str
    email_marketing: bool
    sms_marketing: bool = False
    phone: str | None = None
    consented_at: datetime | None = None  # required for a historical import
    source: str = "Ticket checkout"  # the custom_source: where consent was collected, in words
    phone_region: str = "US"


@dataclass
class Built:
    """The outbox entry for a consent (None when there is nothing to subscribe), and notes for the order."""

    event: OutgoingEvent | None
    notes: list[str] = field(default_factory=list)
    sms_left_out: bool = False


def unique_id(order_id: int) -> str:
    """One subscription per order at most: the outbox refuses a second row with this id."""
    return f"subscription-{order_id}"


def source_for(channel_text: str) -> str:
    """The consent source Klaviyo stores on the consent record, e.g. "Ticket checkout (Event Page)"."""
    return f"Ticket checkout ({channel_text})" if channel_text in ("Event Page", "Widget", "Preview") \
        else f"{channel_text} checkout"


def _marketing(historical: bool, consented_at: datetime | None) -> dict:
    if not historical:
        return dict(SUBSCRIBED)
    if consented_at is None:
        raise ValueError("a historical subscription needs the time consent was given")
    return {**SUBSCRIBED, "consented_at": iso_utc(consented_at)}


def build_subscription(consent: Consent, historical: bool = False) -> Built:
    """The one-profile Bulk Subscribe Profiles body for this consent. Only the purchaser's own consent: the
    attendees they named never appear here. An SMS consent without a usable phone is left out, with a note."""
    notes: list[str] = []
    channels: dict = {}
    attributes: dict = {"email": consent.email}
    if consent.email_marketing:
        channels["email"] = {"marketing": _marketing(historical, consent.consented_at)}
    sms_left_out = False
    if consent.sms_marketing:
        phone = e164(consent.phone, consent.phone_region)
        if phone:
            attributes["phone_number"] = phone
            channels["sms"] = {"marketing": _marketing(historical, consent.consented_at)}
        else:
            sms_left_out = True
            why = (f"the phone number {consent.phone[:40]!r} could not be read as a valid number" if consent.phone
                   else "no valid phone number came with the order")
            outcome = "only the e-mail consent goes to Klaviyo" if consent.email_marketing else "nothing goes to Klaviyo"
            notes.append(f"The purchaser agreed to text messages, but {why}, so {outcome}.")
    if not channels:
        return Built(None, notes, sms_left_out)
    attributes["subscriptions"] = channels
    job_attributes = {"custom_source": consent.source, "profiles": {"data": [{"type": "profile", "attributes": attributes}]}}
    if historical:
        job_attributes["historical_import"] = True
    body = {"data": {"type": JOB_TYPE, "attributes": job_attributes}}
    event = OutgoingEvent(metric=LIST_SUBSCRIPTION, unique_id=unique_id(consent.order_id),
                          profile_key=consent.email.strip().lower(), body=body)
    return Built(event, notes, sms_left_out)


def group_key(body: dict) -> tuple[bool, str | None]:
    """What bodies must share to go in one request: the job's historical_import and custom_source."""
    attributes = body["data"]["attributes"]
    return bool(attributes.get("historical_import")), attributes.get("custom_source")


def bulk_subscribe_body(bodies: list[dict], list_id: str) -> dict:
    """One request for up to 1,000 one-profile bodies that share a group_key, subscribing them to `list_id`."""
    if not bodies or len(bodies) > MAX_PROFILES:
        raise ValueError(f"a request holds 1 to {MAX_PROFILES} profiles, not {len(bodies)}")
    keys = {group_key(body) for body in bodies}
    if len(keys) != 1:
        raise ValueError("bodies with different historical_import or custom_source cannot share a request")
    merged = copy.deepcopy(bodies[0])
    merged["data"]["attributes"]["profiles"]["data"] = [
        profile for body in bodies for profile in copy.deepcopy(body["data"]["attributes"]["profiles"]["data"])]
    merged["data"]["relationships"] = {"list": {"data": {"type": "list", "id": list_id}}}
    return merged


def create_list_body(name: str, double_opt_in: bool) -> dict:
    """Create List: a list named by the organizer, with a confirmation e-mail (double opt-in) or without."""
    return {"data": {"type": "list", "attributes": {
        "name": name, "opt_in_process": "double_opt_in" if double_opt_in else "single_opt_in"}}}
