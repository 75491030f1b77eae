"""Who holds a valid ticket: the purchaser of an order that still has one, and the attendee of each.

Klaviyo's reminder flows wait for a profile's NextEventStartAt, so every event that changes what someone
holds carries their next upcoming event, or unsets it when nothing is upcoming.
"""
from collections.abc import Iterable

from sqlalchemy import bindparam, func, or_, select

from portal.contact import normalize_email
from portal.events.models import Event
from portal.extensions import db
from portal.klaviyo.payloads import NextEvent, NextEvents, Person
from portal.orders.models import VALID, Attendee, Order, Ticket
from portal.types import utcnow


def next_events(organizer_id: int, emails: Iterable[str | None]) -> NextEvents:
    """For each e-mail: the soonest upcoming event of this organizer it holds a valid ticket for, or None.
    One query for all of them; call it after the change is flushed, so the change counts."""
    wanted = {normalize_email(email) for email in emails if normalize_email(email)}
    return _holding(organizer_id, wanted) if wanted else {}


_SOONER = select(Event.id).where(  # the organizer's upcoming events that start before the given one
    Event.organizer_id == bindparam("organizer_id"), Event.status != "cancelled", Event.starts_at > bindparam("now"),
    or_(Event.starts_at < bindparam("starts_at"),
        (Event.starts_at == bindparam("starts_at")) & (Event.id < bindparam("event_id"))))


def next_events_for_purchase(event: Event, emails: Iterable[str | None]) -> NextEvents:
    """next_events() for the people of a purchase for `event` that is not written yet: once it is, `event` is
    their next event unless they hold a ticket for an upcoming event that starts sooner. So only those sooner
    events are read (usually none), never every order the organizer has; and it can run before the order's
    write transaction."""
    if event.status == "cancelled" or event.starts_at <= utcnow():
        return next_events(event.organizer_id, emails)  # this purchase changes nobody's next event
    wanted = {normalize_email(email) for email in emails if normalize_email(email)}
    result: NextEvents = {email: NextEvent(event.name, event.starts_at) for email in wanted}
    sooner = list(db.session.scalars(_SOONER, {"organizer_id": event.organizer_id, "now": utcnow(),
                                                "starts_at": event.starts_at, "event_id": event.id}))
    if sooner and wanted:
        result.update((email, found) for email, found in _holding(event.organizer_id, wanted, sooner).items()
                      if found is not None)
    return result


def _holding(organizer_id: int, wanted: set[str], event_ids: list[int] | None = None) -> NextEvents:
    """For each of these normalized e-mails, the soonest upcoming event (of event_ids, when given) it holds a
    valid ticket for, as purchaser or attendee; None when there is none."""
    result: NextEvents = {email: None for email in wanted}
    purchaser, attendee = func.lower(func.trim(Order.email)), func.lower(func.trim(Attendee.email))
    query = (
        select(purchaser, attendee, Event.name, Event.starts_at)
        .select_from(Ticket).join(Order, Ticket.order_id == Order.id).join(Event, Order.event_id == Event.id)
        .outerjoin(Attendee, Attendee.ticket_id == Ticket.id)
        .where(Order.organizer_id == organizer_id, Ticket.status == VALID, Event.status != "cancelled",
               Event.starts_at > utcnow(), or_(purchaser.in_(wanted), attendee.in_(wanted)))
        .order_by(Event.starts_at, Event.id))
    if event_ids is not None:
        query = query.where(Order.event_id.in_(event_ids))
    for buyer, guest, name, starts_at in db.session.execute(query):
        for email in (buyer, guest):
            if email in result and result[email] is None:
                result[email] = NextEvent(name, starts_at)
    return result


def holders(event_id: int) -> list[tuple[Person, int]]:
    """Everyone holding a valid ticket for this event, once each by e-mail, with one order of theirs."""
    rows = db.session.execute(
        select(Order.id, Order.first_name, Order.last_name, Order.email,
               Attendee.first_name, Attendee.last_name, Attendee.email)
        .select_from(Ticket).join(Order, Ticket.order_id == Order.id)
        .outerjoin(Attendee, Attendee.ticket_id == Ticket.id)
        .where(Order.event_id == event_id, Ticket.status == VALID).order_by(Order.id, Ticket.position))
    people: dict[str, tuple[Person, int]] = {}
    for order_id, first, last, email, a_first, a_last, a_email in rows:
        for person in (Person(first, last, email), Person(a_first or "", a_last or "", a_email)):
            key = normalize_email(person.email)
            if key and key not in people:
                people[key] = (person, order_id)
    return list(people.values())
