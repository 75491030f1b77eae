"""The checkout form's part in Started Checkout and in a test purchase's warning:

- capture(): the form's change requests (htmx, while the buyer types) report the e-mail and the tickets chosen, so
  an abandoned checkout can get its Started Checkout (portal.sync.abandoned). Server-side only: no browser-side
  Klaviyo script ever sees the buyer.
- test_domain_warning(): a test purchase whose purchaser or attendee is at a domain Klaviyo drops is warned about,
  as it is typed and again before it is placed.
- restored(): a Started Checkout's CheckoutURL opens the Event Page with the same tickets chosen again.
"""
import secrets

from flask import render_template_string

from portal.contact import check_email, clean_name, klaviyo_drops, normalize_email
from portal.events.models import Event
from portal.orders.service import OrderInput, discounted
from portal.storefront.checkout import MAX_PER_ORDER, Checkout, read_choice
from portal.sync import abandoned

CONFIRM_FIELD = "test_domain_ok"
WARNING = ("Klaviyo drops events for {who} at {domains}: it accepts them, then keeps nothing, so this test order "
           "would not show up in Klaviyo. Use a real address to see your events arrive.")
_LIVE = """<div class="notice" role="status">{{ text }}</div>"""


def new_token() -> str:
    """A checkout session's id, put in the form when it is shown (the widget has no cookie to keep it in)."""
    return secrets.token_urlsafe(18)


def _dropped(addresses: list[tuple[str, str | None]]) -> tuple[list[str], list[str]]:
    who, domains = [], []
    for label, email in addresses:
        if klaviyo_drops(email):
            who.append(f"{label} ({normalize_email(email)})")
            domains.append("@" + normalize_email(email).rpartition("@")[2])
    return who, list(dict.fromkeys(domains))


def _words(who: list[str], domains: list[str]) -> str:
    return WARNING.format(who=" and ".join(who), domains=", ".join(domains))


def test_domain_warning(order: OrderInput) -> str | None:
    """For a test purchase: the warning when the purchaser's or an attendee's address is at a dropped domain."""
    if not order.is_test:
        return None
    addresses = [("the purchaser", order.email)]
    addresses += [(f"attendee {n}", attendee.email) for n, (_, attendee) in enumerate(order.lines, start=1)
                  if attendee.email and normalize_email(attendee.email) != normalize_email(order.email)]
    who, domains = _dropped(addresses)
    return _words(who, domains) if who else None


def _typed_warning(form) -> str | None:
    """The same warning, from what is typed so far (before the form is complete)."""
    addresses = [("the purchaser", (form.get("email") or "").strip())]
    addresses += [(f"attendee {int(key.split('-')[1]) + 1}", (form.get(key) or "").strip()) for key in form.keys()
                  if key.startswith("attendee-") and key.endswith("-email") and key.split("-")[1].isascii()
                  and key.split("-")[1].isdigit() and len(key.split("-")[1]) <= 4]  # int() of 4300 digits raises
    who, domains = _dropped([(label, email) for label, email in addresses if email])
    return _words(who, domains) if who else None


def capture(event: Event, form, preview: bool, layout: str) -> str:
    """One change request of the checkout form: keep the checkout session for Started Checkout when it has a valid
    e-mail and a ticket, and answer with the test-domain warning for a preview ("" when there is none)."""
    checkout: Checkout = read_choice(event, form, preview)
    email, problem = check_email((form.get("email") or "").strip(), required=True)
    if email and not problem and 0 < checkout.ticket_count <= MAX_PER_ORDER:
        summary = checkout.summary(event) or {"lines": []}
        discount = checkout.discount if "discount_code" not in checkout.errors else None
        lines = [abandoned.ChosenLine(t.id, t.name, n, str(t.price), str(discounted(t.price, discount)), str(t.fee))
                 for t, n in summary["lines"]]
        # The names as typed so far, made printable (PostgreSQL refuses NUL): nobody is shown an error here.
        abandoned.capture(event, form.get("checkout_session") or "", email, clean_name(form.get("first_name") or ""),
                          clean_name(form.get("last_name") or ""), lines, preview, layout,
                          discount.code if discount else None)
    warning = _typed_warning(form) if preview and not form.get("test_domain_shown") else None
    return render_template_string(_LIVE, text=warning) if warning else ""


def restored(event: Event, args, preview: bool) -> Checkout | None:
    """The tickets a CheckoutURL names (qty-<type id>=n, discount_code), chosen again; None for a plain link."""
    if not any(key.startswith("qty-") for key in args.keys()):
        return None
    return read_choice(event, args, preview)
