"""Reading and checking a checkout form. Every problem is reported next to its field, nothing is lost."""
from dataclasses import dataclass, field
from decimal import Decimal

from flask import current_app

from portal.consent import service as consent
from portal.contact import check_email, check_name, check_phone
from portal.events.models import Event, TicketType
from portal.orders.service import AttendeeInput, OrderInput, discounted, find_discount
from portal.sync.connection import LOOK_UP

MAX_PER_ORDER = 20


@dataclass
class Checkout:
    """What the buyer typed (kept to re-render the form) and the errors found, by field name."""

    values: dict
    quantities: dict[int, int] = field(default_factory=dict)
    ticket_count: int = 0
    errors: dict[str, str] = field(default_factory=dict)
    order: OrderInput | None = None
    discount: object | None = None

    def summary(self, event: Event) -> dict | None:
        """Subtotal, discount, fees and total of the tickets chosen so far, for the checkout form."""
        lines = [(t, self.quantities.get(t.id, 0)) for t in event.ticket_types if self.quantities.get(t.id, 0) > 0]
        if not lines or self.ticket_count > MAX_PER_ORDER:
            return None
        subtotal = sum((t.price * n for t, n in lines), Decimal("0"))
        after = sum((discounted(t.price, self.discount) * n for t, n in lines), Decimal("0"))
        fees = sum((t.fee * n for t, n in lines), Decimal("0"))
        return {"lines": lines, "subtotal": subtotal, "discount": subtotal - after, "fees": fees, "total": after + fees}


def _text(form, name: str) -> str:
    return (form.get(name) or "").strip()


def read_checkout(event: Event, form, source: str, is_test: bool, connection=LOOK_UP) -> Checkout:
    """Parse the posted form against this event's ticket types and check every field (with the organizer's
    Klaviyo connection, when the caller has it, for the consent box)."""
    values = {key: form.get(key, "") for key in form.keys()}
    checkout = Checkout(values=values)
    region = event.country or current_app.config["DEFAULT_PHONE_REGION"]
    errors = checkout.errors
    by_id = {t.id: t for t in event.ticket_types}

    for key in form.keys():
        if key.startswith("qty-"):
            type_id = key[4:]
            # An id past 18 digits is no ticket type's (and int() refuses 4300 digits and more: a 500).
            if not (type_id.isascii() and type_id.isdigit()) or len(type_id) > 18 or int(type_id) not in by_id:
                errors["tickets"] = "One of the chosen ticket types does not exist any more. Please choose again."
                continue
            raw = _text(form, key) or "0"
            if not (raw.isascii() and raw.isdigit()) or len(raw) > 4:  # "²" and "١" are digits too
                errors[key] = "Enter a whole number."
                continue
            checkout.quantities[int(type_id)] = int(raw)
    checkout.ticket_count = sum(checkout.quantities.values())
    if "tickets" not in errors and not any(k.startswith("qty-") for k in errors):
        if checkout.ticket_count == 0:
            errors["tickets"] = "Choose at least one ticket."
        elif checkout.ticket_count > MAX_PER_ORDER:
            errors["tickets"] = f"One order can hold at most {MAX_PER_ORDER} tickets."
        for type_id, quantity in checkout.quantities.items():
            if quantity and quantity > by_id[type_id].remaining:
                left = by_id[type_id].remaining
                errors[f"qty-{type_id}"] = f"Only {left} left." if left else "Sold out."

    first, last = _text(form, "first_name"), _text(form, "last_name")
    for name, value, label in (("first_name", first, "your first name"), ("last_name", last, "your last name")):
        if problem := check_name(value, label):
            errors[name] = problem
    email, problem = check_email(_text(form, "email"), required=True)
    if problem:
        errors["email"] = problem
    phone, problem = check_phone(_text(form, "phone"), region)
    if problem:
        errors["phone"] = problem

    discount = None
    if code := _text(form, "discount_code"):
        # A code with control characters is no code (and PostgreSQL refuses a NUL in a query).
        discount = checkout.discount = find_discount(event, code[:40]) if code.isprintable() else None
        if discount is None:
            errors["discount_code"] = "That code is not valid for this event."

    lines: list[tuple[TicketType, AttendeeInput]] = []
    position = 0
    if checkout.ticket_count <= MAX_PER_ORDER:
        for ticket_type in event.ticket_types:
            for _ in range(checkout.quantities.get(ticket_type.id, 0)):
                lines.append((ticket_type, _read_attendee(form, position, (first, last, email, phone), region, errors)))
                position += 1

    if not errors:
        checkout.order = OrderInput(first_name=first, last_name=last, email=email, phone=phone, lines=lines,
                                    discount=discount, source=source, is_test=is_test,
                                    consent=consent.from_checkout(event, form, source, phone, connection),
                                    checkout_session=form.get("checkout_session") or "")
    return checkout


def _read_attendee(form, i, purchaser: tuple, region: str, errors) -> AttendeeInput:
    prefix = f"attendee-{i}-"
    if form.get(prefix + "same"):
        return AttendeeInput(*purchaser)
    a_first, a_last = _text(form, prefix + "first_name"), _text(form, prefix + "last_name")
    for name, value, label in ((prefix + "first_name", a_first, "the attendee's first name"),
                               (prefix + "last_name", a_last, "the attendee's last name")):
        if problem := check_name(value, label):
            errors[name] = problem
    a_email, problem = check_email(_text(form, prefix + "email"), required=False)
    if problem:
        errors[prefix + "email"] = problem
    a_phone, problem = check_phone(_text(form, prefix + "phone"), region)
    if problem:
        errors[prefix + "phone"] = problem
    return AttendeeInput(a_first, a_last, a_email, a_phone)


def read_choice(event: Event, form, is_test: bool) -> Checkout:
    """What the buyer has chosen so far, for the live order summary: the quantities and the discount code, with
    only their own problems (an invalid code, too many tickets), never those of fields not filled in yet."""
    checkout = read_checkout(event, form, "preview" if is_test else "event_page", is_test)
    checkout.errors = {key: message for key, message in checkout.errors.items()
                       if key == "discount_code" or key.startswith("qty-")
                       or (key == "tickets" and checkout.ticket_count > MAX_PER_ORDER)}
    checkout.order = None
    return checkout
