"""A store's paid order, its cancellation and its refunds as plain data, whichever platform sent them, and the
pure helpers that read them.

shopify.py and wix.py turn their platform's payloads into an ExternalOrder, ExternalCancellation or
ExternalRefund; service.py and lifecycle.py apply those to portal orders. Nothing here touches the database or
the network.
"""
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from portal.contact import check_email, check_phone, clean_name
from portal.orders.service import AttendeeInput, LinePrice

CENT = Decimal("0.01")
MAX_UNITS = 1000  # tickets in one store order; beyond this it is refused rather than imported


class PayloadError(ValueError):
    """The payload is authentic but not shaped like the platform's paid order."""


@dataclass
class Buyer:
    first_name: str = ""
    last_name: str = ""
    email: str = ""
    phone: str = ""


@dataclass
class ExternalLine:
    line_id: str
    title: str
    product_id: str | None
    variant_id: str | None
    quantity: int
    unit_price: Decimal
    discount: Decimal  # for the whole line, all units together
    # Attendee details per unit, as the buyer typed them in the store ({} when none were given).
    attendees: list[dict] = field(default_factory=list)

    def summary(self) -> dict:
        return {"line_id": self.line_id, "title": self.title, "product_id": self.product_id,
                "variant_id": self.variant_id, "quantity": self.quantity}


@dataclass
class MarketingConsent:
    """What a store's order says the buyer agreed to about marketing. A payload without a consent field is no
    consent: the defaults."""

    email: bool = False
    sms: bool = False
    consented_at: datetime | None = None  # when the store recorded it; None: when the order was placed
    detail: str = ""  # which fields said so, kept as the order's proof
    language: str | None = None  # the buyer's language, as the store gives it


@dataclass
class ExternalOrder:
    platform: str
    order_id: str
    name: str  # what the store calls it: "#1001" (Shopify), "10001" (Wix)
    currency: str
    placed_at: datetime | None
    buyer: Buyer
    lines: list[ExternalLine]
    discount_codes: list[str] = field(default_factory=list)
    is_test: bool = False
    # Money the store charged that is not a ticket price (tax, shipping), as sentences for the organizer.
    other_charges: list[str] = field(default_factory=list)
    marketing: MarketingConsent = field(default_factory=MarketingConsent)

    @property
    def ref(self) -> str:
        return f"{self.platform}:{self.order_id}"


@dataclass
class ExternalCancellation:
    """The store cancelled one of its orders."""

    platform: str
    order_id: str
    name: str  # what the store calls the order, "" when the payload does not say
    reason: str


@dataclass
class RefundLine:
    """Units of one of the store order's line items that a refund gave back."""

    line_id: str
    quantity: int
    product_id: str | None = None  # when the refund names them; else they are looked up in the imported order
    variant_id: str | None = None
    subtotal: Decimal | None = None  # what the store refunded for these units, when it says
    title: str = ""


@dataclass
class ExternalRefund:
    """Money a store gave back on one of its orders, and the line items it was for."""

    platform: str
    refund_id: str
    order_id: str
    # What the refund's transactions gave back; None when it has none (then the lines' subtotals count).
    amount: Decimal | None
    lines: list[RefundLine]
    reason: str

    @property
    def ref(self) -> str:
        """The portal refund's external_ref: the same store refund is recorded once per portal order."""
        return f"{self.platform}:refund:{self.refund_id}"


def required_id(value, what: str) -> str:
    """A store's id of something the payload must name (an order, a refund), as text."""
    found = identifier(value)
    if found is None:
        raise PayloadError(f"{what} is missing")
    return found


def listed(value, what: str) -> list:
    """A list the payload may leave out (None: empty); anything else is not the platform's shape."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise PayloadError(f"{what} is not a list")
    return value


def refund_units(count: int, units: int) -> int:
    """Units refunded so far, checked against the same bound as an order's."""
    units += count
    if units > MAX_UNITS:
        raise PayloadError(f"the refund has more than {MAX_UNITS} items; the portal handles at most {MAX_UNITS}")
    return units


def money(value, what: str, required: bool = True) -> Decimal:
    """A non-negative amount from a string, number or {"amount": ...}; to the cent."""
    if isinstance(value, dict):
        value = value.get("amount")
    if value is None or value == "":
        if required:
            raise PayloadError(f"{what} is missing")
        return Decimal(0)
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise PayloadError(f"{what} is not an amount")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise PayloadError(f"{what} is not an amount: {str(value)[:40]!r}") from None
    if not amount.is_finite() or amount < 0 or amount > Decimal(10000000):
        raise PayloadError(f"{what} is out of range: {str(value)[:40]!r}")
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


def quantity(value, what: str) -> int:
    """A count of units: 0-9 digits only ("²" and "٣" are digits to Python, but not to int() or to a store)."""
    digits = str(value).strip() if isinstance(value, (int, str)) and not isinstance(value, bool) else ""
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 9:
        raise PayloadError(f"{what} is not a whole number")
    return int(digits)


# Control characters in a store's text become spaces; NUL goes (PostgreSQL refuses it in text: a 500).
_CONTROLS = {**dict.fromkeys(range(32), " "), 0: None, 127: " "}


def text(value, limit: int = 200) -> str:
    if value is None or isinstance(value, (dict, list)):
        return ""
    return str(value).translate(_CONTROLS).strip()[:limit]


def identifier(value) -> str | None:
    """A product or variant id as text ("7513594"), or None."""
    if value is None or isinstance(value, (bool, dict, list)):
        return None
    return text(value, 64) or None


def timestamp(value) -> datetime | None:
    """An ISO 8601 time from the store, in UTC; None when absent or unreadable (the import time is used)."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
        if moment.tzinfo is None:
            return None
        moment = moment.astimezone(UTC)  # year 9999 at UTC-5 is past the calendar's end: OverflowError
    except (ValueError, OverflowError):
        return None
    return min(moment, datetime.now(UTC))


def currency(value) -> str:
    code = text(value, 10).upper()
    if not re.fullmatch(r"[A-Z]{3}", code):
        raise PayloadError("the order's currency is missing or not an ISO 4217 code")
    return code


# "Attendee Name", "Attendee 2 E-mail", "_attendee_1_first_name", "Attendee #3 Phone" ...
_ATTENDEE_FIELD = re.compile(
    r"attendee\s*#?\s*(?P<index>\d+)?\s*[:.\-]?\s*"
    r"(?P<field>full name|name|first name|firstname|given name|last name|lastname|surname|family name|"
    r"e-mail address|email address|e-mail|email|phone number|phone|mobile)")
_FIELDS = {"full name": "name", "name": "name", "first name": "first_name", "firstname": "first_name",
           "given name": "first_name", "last name": "last_name", "lastname": "last_name", "surname": "last_name",
           "family name": "last_name", "e-mail address": "email", "email address": "email", "e-mail": "email",
           "email": "email", "phone number": "phone", "phone": "phone", "mobile": "phone"}


def _field_key(name: str) -> tuple[int | None, str] | None:
    normalized = " ".join(name.strip().lstrip("_").lower().replace("_", " ").split())
    match = _ATTENDEE_FIELD.fullmatch(normalized)
    if not match:
        return None
    index = match.group("index")
    return (int(index) if index is not None else None), _FIELDS[match.group("field")]


def line_items(items: list):
    """(position, item, label, quantity) for each line item of a store order, checked as they come."""
    units = 0
    for position, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            raise PayloadError(f"line item {position} is not an object")
        what = f"line item {position}"
        count = quantity(item.get("quantity"), f"{what}'s quantity")
        units += count
        if units > MAX_UNITS:
            raise PayloadError(f"the order has more than {MAX_UNITS} items; the portal imports at most {MAX_UNITS}")
        yield position, item, what, count


def attendees_from_properties(pairs: list[tuple[str, str]], units: int) -> list[dict]:
    """Attendee details per unit from a line item's properties.

    Numbered names ("Attendee 2 Email") go to that unit. Unnumbered ones ("Attendee Email") go to the
    first unit, and when repeated, to the next units in turn. Units without details get {}.
    """
    numbered: dict[int, dict] = {}
    repeated: dict[str, list[str]] = {}
    for name, value in pairs:
        key = _field_key(str(name))
        value = text(value)
        if key is None or not value:
            continue
        index, field_name = key
        if index is None:
            repeated.setdefault(field_name, []).append(value)
        else:
            numbered.setdefault(index, {}).setdefault(field_name, value)
    first = 0 if 0 in numbered else 1  # "Attendee 0 Name" means the stores count from zero
    result = []
    for unit in range(units):
        details = dict(numbered.get(unit + first, {}))
        for field_name, values in repeated.items():
            if unit < len(values):
                details.setdefault(field_name, values[unit])
        result.append(details)
    return result


def purchaser(buyer: Buyer, region: str = "US") -> tuple[str, str, str | None, str | None, list[str]]:
    """(first, last, e-mail, phone, notes). The e-mail is None when there is no valid one."""
    notes = []
    email, problem = check_email(buyer.email.strip(), required=True)
    phone, phone_problem = check_phone(buyer.phone.strip(), region)
    if phone_problem:
        notes.append(f"The purchaser's phone number {buyer.phone.strip()[:40]!r} could not be read, so it was left out.")
    return clean_name(buyer.first_name), clean_name(buyer.last_name), email if not problem else None, phone, notes


def attendee_input(details: dict, default: AttendeeInput, label: str, notes: list[str],
                   region: str = "US") -> AttendeeInput:
    """The attendee of one ticket: the details typed in the store, or the purchaser when there are none."""
    if not details:
        return default
    first, last = details.get("first_name", ""), details.get("last_name", "")
    if "name" in details and not (first or last):
        parts = details["name"].split(None, 1)
        first, last = parts[0], (parts[1] if len(parts) > 1 else "")
    email, problem = check_email(details.get("email", ""), required=False)
    if problem:
        notes.append(f"The attendee e-mail {details['email'][:99]!r} on {label} is not a valid address, "
                     "so it was left out.")
    phone, problem = check_phone(details.get("phone", ""), region)
    if problem:
        notes.append(f"The attendee phone number {details['phone'][:40]!r} on {label} could not be read, "
                     "so it was left out.")
    return AttendeeInput(clean_name(first), clean_name(last), email, phone)


def unit_prices(line: ExternalLine) -> list[LinePrice]:
    """Each unit's price: the store's unit price, less an even share of the line's discount (cents to the first)."""
    cents = int((min(line.discount, line.unit_price * line.quantity) * 100).to_integral_value())
    share, rest = divmod(cents, line.quantity) if line.quantity else (0, 0)
    prices = []
    for unit in range(line.quantity):
        cut = Decimal(share + (1 if unit < rest else 0)) / 100
        prices.append(LinePrice(base=line.unit_price, final=max(line.unit_price - cut, Decimal(0)).quantize(CENT)))
    return prices


def describe_item(item: dict) -> str:
    ids = ", ".join(f"{label} {item[key]}" for key, label in (("product_id", "product"), ("variant_id", "variant"))
                    if item.get(key))
    return f"{item['quantity']} × {item['title'] or 'untitled item'}" + (f" ({ids})" if ids else "")
