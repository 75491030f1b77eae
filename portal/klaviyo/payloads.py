"""Pure functions that turn an order into the Klaviyo events of the Data Reference.

Nothing here touches the database or the network: an order comes in as plain data, JSON:API bodies for
Klaviyo's Create Event endpoint come out. Metric and property names are exact, because organizers'
Klaviyo flows and segments are built on them.
"""
import copy
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from decimal import Decimal

from portal.contact import e164, normalize_email

PLACED_ORDER = "Placed Order"
ORDERED_EXPERIENCE = "Ordered Experience"
REGISTERED_ATTENDEE = "Registered Attendee"
METRICS = (PLACED_ORDER, ORDERED_EXPERIENCE, REGISTERED_ATTENDEE)

# Why an attendee did or did not get a Registered Attendee event.
REGISTERED = "registered"
SAME_AS_PURCHASER = "same_as_purchaser"
REPEATED_EMAIL = "repeated_email"
NO_EMAIL = "no_email"
REASON_TEXT = {
    REGISTERED: "Registered Attendee sent to this attendee",
    SAME_AS_PURCHASER: "No Registered Attendee: same e-mail as the purchaser",
    REPEATED_EMAIL: "No Registered Attendee: this e-mail already has one in this order",
    NO_EMAIL: "No Registered Attendee: no e-mail address",
}


@dataclass(frozen=True)
class Person:
    first_name: str
    last_name: str
    email: str | None
    phone: str | None = None


@dataclass(frozen=True)
class TicketLine:
    ticket_id: str  # the ticket UUID
    type_name: str
    base_price: Decimal
    final_price: Decimal
    fee: Decimal
    attendee_id: int
    attendee: Person


@dataclass(frozen=True)
class NextEvent:
    """A person's next upcoming event with a valid ticket: what reminder flows wait for."""

    name: str
    starts_at: datetime


# Profile properties every purchaser and attendee carries; unset when nothing is upcoming.
NEXT_EVENT_PROPERTIES = ("NextEventName", "NextEventStartAt")
# By normalized e-mail: the person's NextEvent, or None when nothing is upcoming. A person missing from
# the mapping gets no profile properties at all (their profile is left as it is).
NextEvents = dict[str, "NextEvent | None"]


@dataclass(frozen=True)
class OrderData:
    order_id: int
    placed_at: datetime
    currency: str
    event_name: str
    event_start: datetime
    event_end: datetime
    venue: str
    purchaser: Person
    tickets: tuple[TicketLine, ...]
    phone_region: str = "US"
    next_events: NextEvents | None = None
    is_test: bool = False  # a test purchase (the organizer's preview, a store's test order): IsTest on its events


@dataclass(frozen=True)
class OutgoingEvent:
    metric: str
    unique_id: str
    profile_key: str
    body: dict


@dataclass
class BuildResult:
    events: list[OutgoingEvent] = field(default_factory=list)
    # (attendee_id, reason) for every ticket, in ticket order
    attendee_reasons: list[tuple[int, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def iso_utc(moment: datetime) -> str:
    """ISO 8601 in UTC with a Z, to the second: 2026-07-15T18:00:00Z."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime; times must be timezone-aware")
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def number(amount: Decimal) -> float | int:
    """A JSON number for a money amount: whole amounts as integers, others with their cents."""
    amount = Decimal(amount)
    return int(amount) if amount == amount.to_integral_value() else float(amount)


def registration_reasons(purchaser_email: str | None, attendee_emails: Iterable[str | None]) -> list[str]:
    """The one rule for Registered Attendee: for each ticket's attendee e-mail, in ticket order, whether it
    gets one (REGISTERED) or why not. One per unique e-mail in the order, never the purchaser's own."""
    purchaser = normalize_email(purchaser_email)
    seen: set[str] = set()
    reasons = []
    for raw in attendee_emails:
        email = normalize_email(raw)
        if not email:
            reason = NO_EMAIL
        elif email == purchaser:
            reason = SAME_AS_PURCHASER
        elif email in seen:
            reason = REPEATED_EMAIL
        else:
            reason = REGISTERED
            seen.add(email)
        reasons.append(reason)
    return reasons


def attendee_reasons(order: OrderData) -> list[tuple[int, str]]:
    """Decide, ticket by ticket, which attendees get a Registered Attendee event and why."""
    reasons = registration_reasons(order.purchaser.email, (line.attendee.email for line in order.tickets))
    return [(line.attendee_id, reason) for line, reason in zip(order.tickets, reasons)]


def build_order_events(order: OrderData) -> BuildResult:
    """Every Klaviyo event one order produces: 1 Placed Order, 1 Ordered Experience per ticket,
    1 Registered Attendee per unique attendee e-mail other than the purchaser's."""
    result = BuildResult()
    purchaser_phone = _phone(order.purchaser.phone, order.phone_region, "the purchaser", result.notes)
    result.events.append(_placed_order(order, purchaser_phone))
    result.events.extend(_ordered_experience(order, line) for line in order.tickets)
    result.attendee_reasons = attendee_reasons(order)
    by_attendee = {line.attendee_id: line for line in order.tickets}
    for attendee_id, reason in result.attendee_reasons:
        if reason == REGISTERED:
            result.events.append(registered_attendee(order, by_attendee[attendee_id], notes=result.notes))
    return result


def order_total(order: OrderData) -> Decimal:
    return sum((line.final_price + line.fee for line in order.tickets), Decimal("0"))


def _phone(raw, region, whose, notes) -> str | None:
    normalized = e164(raw, region)
    if raw and raw.strip() and normalized is None:
        notes.append(f"The phone number of {whose} could not be read as an international (E.164) number, "
                     "so it was left out of the Klaviyo profile.")
    return normalized


def profile(person: Person, phone: str | None = None, next_events: NextEvents | None = None) -> dict:
    """The event's profile: who it is, and (when known) their NextEventName and NextEventStartAt, set or unset."""
    attributes = {"email": (person.email or "").strip()}
    if person.first_name.strip():
        attributes["first_name"] = person.first_name.strip()
    if person.last_name.strip():
        attributes["last_name"] = person.last_name.strip()
    if phone:
        attributes["phone_number"] = phone
    key = normalize_email(person.email)
    if next_events is not None and key in next_events:
        upcoming = next_events[key]
        if upcoming is None:
            attributes["meta"] = {"patch_properties": {"unset": list(NEXT_EVENT_PROPERTIES)}}
        else:
            attributes["properties"] = {"NextEventName": upcoming.name, "NextEventStartAt": iso_utc(upcoming.starts_at)}
    return {"data": {"type": "profile", "attributes": attributes}}


def item(line: TicketLine) -> dict:
    """One ticket in an Items array, as the Data Reference shapes it."""
    return {
        "ProductID": line.ticket_id,
        "ProductName": line.type_name,
        "Quantity": 1,
        "ItemPrice": number(line.base_price),
        "RowTotal": number(line.final_price),
        "FeeAmount": number(line.fee),
    }


def event(metric: str, unique_id: str, person: Person, phone: str | None, properties: dict,
          at: datetime, value: Decimal | None = None, currency: str | None = None,
          next_events: NextEvents | None = None) -> OutgoingEvent:
    """A Create Event body for one metric, one profile, one moment."""
    attributes = {
        "properties": properties,
        "time": iso_utc(at),
        "unique_id": unique_id,
        "metric": {"data": {"type": "metric", "attributes": {"name": metric}}},
        "profile": profile(person, phone, next_events),
    }
    if value is not None:
        attributes["value"] = number(value)
        attributes["value_currency"] = currency
    return OutgoingEvent(metric, unique_id, normalize_email(person.email), {"data": {"type": "event", "attributes": attributes}})


def _placed_order(order: OrderData, phone: str | None) -> OutgoingEvent:
    properties = {
        "OrderId": str(order.order_id),
        "Items": [item(line) for line in order.tickets],
        "EventName": order.event_name,
        "EventStartAt": iso_utc(order.event_start),
        "EventEndAt": iso_utc(order.event_end),
        "VenueName": order.venue,
        "Currency": order.currency,
        "AttendeeCount": len(order.tickets),
        "IsTest": order.is_test,
    }
    return event(PLACED_ORDER, f"order_{order.order_id}", order.purchaser, phone, properties,
                 order.placed_at, order_total(order), order.currency, order.next_events)


def _ordered_experience(order: OrderData, line: TicketLine) -> OutgoingEvent:
    properties = {
        "OrderId": str(order.order_id),
        "ExperienceId": line.ticket_id,
        "ExperienceName": line.type_name,
        "Quantity": 1,
        "TicketPrice": number(line.base_price),
        "FinalPrice": number(line.final_price),
        "FeeAmount": number(line.fee),
        "EventName": order.event_name,
        "EventStartAt": iso_utc(order.event_start),
        "VenueName": order.venue,
        "Currency": order.currency,
        "IsTest": order.is_test,
    }
    # The Data Reference ties Ordered Experience to the purchaser's profile, without a phone number.
    return event(ORDERED_EXPERIENCE, f"experience_{line.ticket_id}", order.purchaser, None, properties,
                 order.placed_at, line.final_price, order.currency)


def registered_attendee(order: OrderData, line: TicketLine, at: datetime | None = None,
                        notes: list[str] | None = None) -> OutgoingEvent:
    """A Registered Attendee for this ticket's attendee: at purchase, or later when the ticket is handed to them."""
    phone = _phone(line.attendee.phone, order.phone_region, f"attendee {line.attendee_id}",
                   notes if notes is not None else [])
    properties = {
        "AttendeeId": str(line.attendee_id),
        "EventName": order.event_name,
        "EventStartAt": iso_utc(order.event_start),
        "EventEndAt": iso_utc(order.event_end),
        "VenueName": order.venue,
        "OrderId": str(order.order_id),
        "Currency": order.currency,
        "TicketName": line.type_name,
        "IsTest": order.is_test,
    }
    return event(REGISTERED_ATTENDEE, f"attendee_{line.attendee_id}", line.attendee, phone, properties,
                 at or order.placed_at, next_events=order.next_events)


def as_past_event(built: OutgoingEvent) -> OutgoingEvent:
    """The same event marked backfill: true, so Klaviyo records it without firing flows. A new body: the
    event given is left as it was."""
    body = copy.deepcopy(built.body)
    body["data"]["attributes"]["backfill"] = True
    return replace(built, body=body)


def bulk_body(events: list[dict], backfill: bool = False) -> dict:
    """One Bulk Create Events body from Create Event bodies, grouped per profile as Klaviyo requires.

    A group has one profile, so the profiles of its events are merged in order: later details win, and a
    NextEvent property set by a later event replaces an earlier unset (and the other way round). Bulk
    Create takes the unset as the profile's `meta`, beside its attributes (Create Event: inside them)."""
    groups: dict[str, dict] = {}
    merged: dict[str, dict] = {}
    for body in events:
        attributes = body["data"]["attributes"]
        person = attributes["profile"]["data"]
        key = normalize_email(person["attributes"].get("email")) or person["attributes"].get("phone_number", "")
        if key not in groups:
            merged[key] = copy.deepcopy(person["attributes"])
            groups[key] = {"type": "event-bulk-create",
                           "attributes": {"profile": {"data": {"type": person["type"]}}, "events": {"data": []}}}
        else:
            _merge_profile(merged[key], person["attributes"])
        event_attributes = {k: v for k, v in attributes.items() if k != "profile"}
        if backfill:
            event_attributes["backfill"] = True
        groups[key]["attributes"]["events"]["data"].append({"type": "event", "attributes": event_attributes})
    for key, group in groups.items():
        profile_attributes = dict(merged[key])
        profile = group["attributes"]["profile"]["data"]
        meta = profile_attributes.pop("meta", None)
        profile["attributes"] = profile_attributes
        if meta:
            profile["meta"] = meta
    return {"data": {"type": "event-bulk-create-job",
                     "attributes": {"events-bulk-create": {"data": list(groups.values())}}}}


def _merge_profile(into: dict, later: dict) -> None:
    properties = dict(into.pop("properties", None) or {})
    unset = list(((into.pop("meta", None) or {}).get("patch_properties") or {}).get("unset") or [])
    into.update({k: v for k, v in later.items() if k not in ("properties", "meta")})
    for name, value in (later.get("properties") or {}).items():
        properties[name] = value
        unset = [u for u in unset if u != name]
    for name in ((later.get("meta") or {}).get("patch_properties") or {}).get("unset") or []:
        properties.pop(name, None)
        if name not in unset:
            unset.append(name)
    if properties:
        into["properties"] = properties
    if unset:
        into["meta"] = {"patch_properties": {"unset": unset}}
