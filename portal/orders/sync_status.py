"""Where an order's Klaviyo events stand, in words for the organizer: one plain line for the whole order
("Klaviyo has all 5 events of this order."), a short form for the orders list, and for each event what it
is for and what is happening to it. Pure functions of the outbox rows' statuses; no database here."""
import json
from collections.abc import Iterable
from dataclasses import dataclass

from portal.contact import klaviyo_drops, normalize_email
from portal.klaviyo.metrics import purpose
from portal.text import plural

# The outbox's statuses (portal.sync.models), repeated as plain strings: this module only reads them.
SENT, PENDING, CLAIMED, HELD, FAILED, CANCELLED = "sent", "pending", "claimed", "held", "failed", "cancelled"


@dataclass(frozen=True)
class OrderSync:
    """Counts of one order's Klaviyo events by what happened to them."""

    total: int = 0
    kept: int = 0  # accepted, and on a profile in Klaviyo
    dropped: int = 0  # accepted, but for a test address Klaviyo drops
    sending: int = 0  # queued, being sent or waiting to retry
    held: int = 0  # waiting for a reconnect
    failed: int = 0
    not_sent: int = 0  # cancelled by a disconnect or a stopped backfill

    @property
    def accepted(self) -> int:
        return self.kept + self.dropped

    @property
    def tone(self) -> str:
        """The badge colour: bad, warn, info, ok, or "" when nothing was sent."""
        if not self.total:
            return ""
        if self.failed:
            return "bad"
        if self.held or self.not_sent or self.dropped:
            return "warn"
        return "info" if self.sending else "ok"

    @property
    def line(self) -> str:
        """One plain sentence for the order page and the confirmation's sync panel."""
        total = self.total
        if not total:
            return "Nothing was sent to Klaviyo for this order: it was placed while Klaviyo was not connected."
        if self.failed:
            return (f"Klaviyo has {self.kept} of this order's {plural(total, 'event')}; "
                    f"{self.failed} failed. See why below, then retry.")
        if self.held:
            return (f"Klaviyo has {self.kept} of this order's {plural(total, 'event')}; {self.held} "
                    f"{'waits' if self.held == 1 else 'wait'} until you reconnect Klaviyo. Nothing is lost.")
        if self.sending:
            return f"Sending to Klaviyo: {self.accepted} of {plural(total, 'event')} accepted so far."
        if self.not_sent:
            return (f"Klaviyo has {self.kept} of this order's {plural(total, 'event')}; {self.not_sent} "
                    f"{'was' if self.not_sent == 1 else 'were'} never sent, because Klaviyo was disconnected or "
                    "the backfill was stopped first.")
        if self.dropped:
            which = ("1 is for a test address" if self.dropped == 1
                     else f"{self.dropped} are for test addresses")
            return (f"Klaviyo accepted all {plural(total, 'event')} of this order but keeps {self.kept}: {which} "
                    "(like @example.com), which Klaviyo drops.")
        if total == 1:
            return "Klaviyo has the one event of this order."
        return f"Klaviyo has all {total} events of this order."

    @property
    def short(self) -> str:
        """The same, in a few words, for the orders list."""
        if not self.total:
            return "Not sent"
        if self.failed:
            return f"{self.failed} failed"
        if self.held:
            return "Held: reconnect"
        if self.sending:
            return f"Sending, {self.accepted} of {self.total}"
        if self.not_sent:
            return f"{self.not_sent} not sent"
        if self.dropped:
            return f"{self.kept} of {self.total} kept"
        return f"All {self.total} in Klaviyo"


def summarize(rows: Iterable[tuple[str, str]]) -> OrderSync:
    """The counts for one order, from (status, profile e-mail) pairs of its outbox rows."""
    counts = dict.fromkeys(("kept", "dropped", "sending", "held", "failed", "not_sent"), 0)
    total = 0
    for status, profile_key in rows:
        total += 1
        if status == SENT:
            counts["dropped" if klaviyo_drops(profile_key) else "kept"] += 1
        elif status in (PENDING, CLAIMED):
            counts["sending"] += 1
        elif status == HELD:
            counts["held"] += 1
        elif status == FAILED:
            counts["failed"] += 1
        else:
            counts["not_sent"] += 1
    return OrderSync(total=total, **counts)


def summarize_rows(rows) -> OrderSync:
    """The counts for one order, from its OutboxEvent rows."""
    return summarize((row.status, row.profile_key) for row in rows)


@dataclass(frozen=True)
class EventWords:
    """One Klaviyo event as the organizer reads it."""

    purpose: str  # what Klaviyo uses it for
    note: str  # what is happening to it, when there is something to say
    dropped: bool  # accepted, but Klaviyo drops events for this test address
    subject: str = ""  # which ticket, refund or change it is about, when the metric has several per order


def event_words(row) -> EventWords:
    """What one outbox row is for and, in plain words, where it stands."""
    dropped = row.status == SENT and klaviyo_drops(row.profile_key)
    detail = row.status_detail or ""
    if dropped:
        note = "Accepted, but Klaviyo drops events for test addresses like @example.com: no profile gets it."
    elif row.status == SENT:
        note = "Sent as a past order: Klaviyo recorded it without starting flows." if row.backfill else ""
    elif row.status == HELD and getattr(row, "kind", "event") == "subscription" and detail.startswith("held: "):
        # A list subscription waits for something of its own (a list, a permission): say which.
        note = detail.removeprefix("held: ").capitalize() + ". Nothing is lost: it goes as soon as you do."
    elif row.status == HELD:
        note = "Waiting for you to reconnect Klaviyo. Nothing is lost: it goes as soon as you do."
    elif row.status == CANCELLED:
        note = ("Not sent: the backfill was stopped before it went. Resume it in View Details."
                if "backfill" in detail else "Not sent: Klaviyo was disconnected before it went.")
    elif row.status == FAILED:
        note = ("Klaviyo kept failing for 3 days, so the portal stopped trying. Retry once Klaviyo works again."
                if "3 days" in detail else "Klaviyo refused this event. Its reason is below; fix it, then retry.")
    elif row.status in (PENDING, CLAIMED) and detail == "rate limited":
        note = "Klaviyo asked the portal to slow down; it goes again by itself in a moment."
    elif row.status in (PENDING, CLAIMED) and row.attempts:
        note = "Klaviyo could not be reached or had a problem; the portal keeps trying by itself, for up to 3 days."
    else:
        note = ""
    return EventWords(purpose=purpose(row.metric), note=note, dropped=dropped, subject=_subject(row.payload))


def _subject(payload: str) -> str:
    """What in the order this event is about, read from its properties: "VIP ticket", "USD 80 refunded"."""
    try:
        attributes = json.loads(payload)["data"]["attributes"]
        properties = attributes["properties"]
    except (TypeError, ValueError, KeyError):
        return ""
    if not isinstance(properties, dict):
        return ""
    ticket = properties.get("ExperienceName") or properties.get("TicketName")
    if ticket:
        return f"{ticket} ticket"
    if "RefundedAmount" in properties:
        full = " (all of it)" if properties.get("IsFullRefund") else ""
        return f"{properties.get('Currency', '')} {properties['RefundedAmount']} refunded{full}".strip()
    if properties.get("ChangedFields"):
        names = {"EventStartAt": "start", "EventEndAt": "end", "VenueName": "venue"}
        return "New " + " and ".join(names.get(f, str(f)) for f in properties["ChangedFields"])
    return ""


def people(order) -> dict[str, str]:
    """Names by e-mail of everyone an order's events can be about: the buyer, the attendees, and those who handed
    their ticket on."""
    names = {normalize_email(x.from_email): x.from_name for x in order.transfers if x.from_email and x.from_name}
    for ticket in order.tickets:
        if ticket.attendee.email and ticket.attendee.name:
            names[normalize_email(ticket.attendee.email)] = ticket.attendee.name
    names[normalize_email(order.email)] = order.purchaser_name
    return names


def pretty_payload(payload: str) -> str:
    """The stored request body, indented for people; as it is when it is not JSON."""
    try:
        return json.dumps(json.loads(payload), indent=2, ensure_ascii=False)
    except (TypeError, ValueError):
        return payload or ""


def context(order, rows) -> dict:
    """What the templates that show an order's events need (orders/_events.html, orders/_sync_line.html)."""
    return {"sync": summarize_rows(rows), "people": people(order), "event_words": event_words,
            "pretty_payload": pretty_payload}
