"""Reading the cancel, refund and transfer forms of the order page. Every problem is reported next to its
field, and what was typed is kept."""
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from flask import current_app

from portal.contact import check_email, check_name, check_phone
from portal.orders.models import Order
from portal.orders.service import AttendeeInput

REASON_MAX = 500
_AMOUNT = re.compile(r"\d{1,9}(\.\d{1,2})?")


@dataclass
class Form:
    values: dict
    errors: dict[str, str] = field(default_factory=dict)


def _values(form, names) -> dict:
    return {name: (form.get(name) or "").strip() for name in names}


def _reason(form: Form, required: bool = True) -> str:
    reason = form.values.get("reason", "")
    if not reason and required:
        form.errors["reason"] = "Say why, in a few words: it is recorded with the change and sent to Klaviyo as Reason."
    elif len(reason) > REASON_MAX:
        form.errors["reason"] = f"Use at most {REASON_MAX} characters."
    return reason


@dataclass
class CancelForm(Form):
    reason: str = ""
    refund: bool = False
    include_fees: bool = False


def read_cancel(form) -> CancelForm:
    result = CancelForm(values=_values(form, ("reason", "refund", "include_fees")))
    result.reason = _reason(result)
    result.refund, result.include_fees = bool(result.values["refund"]), bool(result.values["include_fees"])
    return result


@dataclass
class RefundForm(Form):
    ticket_ids: list[str] = field(default_factory=list)
    amount: Decimal | None = None
    include_fees: bool = False
    reason: str = ""
    request_key: str | None = None


def read_refund(order: Order, form) -> RefundForm:
    result = RefundForm(values=_values(form, ("amount", "include_fees", "reason", "request_key")))
    result.ticket_ids = [tid for tid in form.getlist("ticket") if tid][:100]
    result.values["ticket"] = result.ticket_ids
    result.include_fees = bool(result.values["include_fees"])
    result.reason = _reason(result)
    key = result.values["request_key"]
    result.request_key = key if re.fullmatch(r"[0-9a-f]{32}", key) else None
    known = {t.id for t in order.tickets}
    if any(tid not in known for tid in result.ticket_ids):
        result.errors["ticket"] = "One of the chosen tickets is not in this order. Reload the page and choose again."
    raw = result.values["amount"].replace(",", "")
    if raw:
        if not _AMOUNT.fullmatch(raw):
            result.errors["amount"] = f"Enter an amount like 25.00, in {order.currency}."
        else:
            try:
                result.amount = Decimal(raw)
            except InvalidOperation:
                result.errors["amount"] = f"Enter an amount like 25.00, in {order.currency}."
            if result.amount is not None and result.amount <= 0:
                result.errors["amount"] = "Enter an amount above zero."
            elif result.amount is not None and result.amount > order.refundable:
                result.errors["amount"] = (f"At most {order.currency} {order.refundable:,.2f} can be refunded: what was "
                                           "paid, minus earlier refunds.")
    elif not result.ticket_ids and "ticket" not in result.errors:
        result.errors["ticket"] = "Choose the tickets to refund, or enter an amount to refund on the order."
    return result


@dataclass
class TransferForm(Form):
    attendee: AttendeeInput | None = None
    reason: str = ""


def read_transfer(form, region: str | None = None) -> TransferForm:
    result = TransferForm(values=_values(form, ("first_name", "last_name", "email", "phone", "reason")))
    values, errors = result.values, result.errors
    for name, label in (("first_name", "the new attendee's first name"), ("last_name", "the new attendee's last name")):
        if problem := check_name(values[name], label):
            errors[name] = problem
    email, problem = check_email(values["email"], required=True)
    if problem:
        errors["email"] = problem
    phone, problem = check_phone(values["phone"], region or current_app.config["DEFAULT_PHONE_REGION"])
    if problem:
        errors["phone"] = problem
    result.reason = _reason(result)
    if not errors:
        result.attendee = AttendeeInput(values["first_name"], values["last_name"], email, phone)
    return result
