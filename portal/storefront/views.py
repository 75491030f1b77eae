"""The public side: the Event Page, the embeddable widget, checkout and the confirmation page."""
import secrets

from flask import Blueprint, abort, current_app, request
from flask_login import current_user
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import joinedload

from portal.events.models import Event
from portal.extensions import csrf, db
from portal.orders import sync_status
from portal.orders.models import Order
from portal.orders.service import SoldOut, place_order
from portal.storefront import limits, started
from portal.storefront.checkout import MAX_PER_ORDER, Checkout, read_checkout, read_choice
from portal.sync.connection import connection_for
from portal.sync.models import OutboxEvent
from portal.htmx import render, see_other

bp = Blueprint("storefront", __name__)

LAYOUTS = {"page": "storefront/event.html", "widget": "storefront/widget.html"}
FORM_TOKEN_MAX_AGE = 12 * 3600


def _signer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt="checkout-form")


def form_token(event: Event) -> str:
    """The checkout's anti-forgery token: signed rather than tied to the session cookie, because the widget runs
    inside organizers' sites, where browsers don't send it; it names this page's visit (a random nonce), which
    is good for FORM_TOKEN_MAX_ORDERS orders."""
    return _signer().dumps([event.public_id, secrets.token_urlsafe(12)])


def _form_nonce(event: Event) -> str | None:
    """The visit the posted form token names, when it is a valid token of this event's page."""
    try:
        value = _signer().loads(request.form.get("form_token", ""), max_age=FORM_TOKEN_MAX_AGE)
    except BadSignature:
        return None
    if isinstance(value, list) and len(value) == 2 and value[0] == event.public_id and isinstance(value[1], str):
        return value[1]
    return None


def _form_token_ok(event: Event) -> bool:
    return _form_nonce(event) is not None


def _guarded(read, event: Event, form, *args, **kwargs) -> Checkout:
    """Read the form, with a limit on how many wrong discount codes one address may try."""
    code = (form.get("discount_code") or "").strip()
    if code and not limits.code_guesses_left():
        form = {key: form.get(key) for key in form.keys() if key != "discount_code"}
        checkout = read(event, _Form(form), *args, **kwargs)
        checkout.errors["discount_code"] = "Too many codes were tried from your connection. Try again in 10 minutes."
        checkout.values["discount_code"] = code
        checkout.order = None
        return checkout
    checkout = read(event, form, *args, **kwargs)
    if code and "discount_code" in checkout.errors:
        limits.wrong_code()
    return checkout


class _Form(dict):
    """A plain dict with the form interface the readers use (get, keys, getlist)."""

    def getlist(self, key):
        value = self.get(key)
        return [] if value is None else [value]


def _owner_preview(event: Event) -> bool:
    return ((request.args.get("preview") or request.form.get("preview")) == "1" and current_user.is_authenticated
            and current_user.id == event.organizer_id)


_EVENT_FOR_SALE = select(Event).options(joinedload(Event.ticket_types)).where(Event.public_id == bindparam("public_id"))


def _event_for_sale(public_id: str) -> tuple[Event, bool]:
    """The event (with its ticket types, in the same query), and whether this is the organizer's own test preview.
    Drafts only exist for their owner."""
    event = db.session.execute(_EVENT_FOR_SALE, {"public_id": public_id}).unique().scalar_one_or_none()
    if event is None:
        abort(404)
    preview = _owner_preview(event)
    if not event.is_live and not preview:
        abort(404)
    return event, preview


def _show(event, layout, preview, checkout: Checkout | None = None, status=200, error=None):
    checkout = checkout or Checkout(values={}, quantities={})
    return render(LAYOUTS[layout], event=event, layout=layout, preview=preview, checkout=checkout,
                  errors=checkout.errors, values=checkout.values, max_per_order=MAX_PER_ORDER, page_error=error,
                  form_token=form_token(event)), status


@bp.get("/e/<public_id>")
def event_page(public_id):
    event, preview = _event_for_sale(public_id)
    return _show(event, "page", preview, started.restored(event, request.args, preview))  # a CheckoutURL's tickets


@bp.get("/w/<public_id>")
def widget(public_id):
    event, preview = _event_for_sale(public_id)
    return _show(event, "widget", preview)


def _live_part(kind: str, public_id: str, block: str):
    event, preview = _event_for_sale(public_id)
    checkout = _guarded(read_choice, event, request.args, preview)
    layout = "page" if kind == "e" else "widget"
    return render(LAYOUTS[layout], block=block, event=event, preview=preview, checkout=checkout,
                  errors=checkout.errors, values=checkout.values, layout=layout, max_per_order=MAX_PER_ORDER,
                  page_error=None, form_token=form_token(event))


@bp.get("/<any(e,w):kind>/<public_id>/attendees")
def attendees(kind, public_id):
    """The attendee fields for the chosen quantities, with the order summary (htmx swaps them in as quantities
    change)."""
    return _live_part(kind, public_id, "attendees")


@bp.get("/<any(e,w):kind>/<public_id>/summary")
def summary(kind, public_id):
    """The order summary: lines, discount, fees and total, and whether the discount code is valid (htmx swaps it
    in as the code is typed)."""
    return _live_part(kind, public_id, "summary")


@bp.post("/<any(e,w):kind>/<public_id>/checkout")
@csrf.exempt  # checked below with the signed form token instead
def checkout(kind, public_id):
    layout = "page" if kind == "e" else "widget"
    event, preview = _event_for_sale(public_id)
    nonce = _form_nonce(event)
    if nonce is None:
        checkout = Checkout(values={k: request.form.get(k, "") for k in request.form.keys()})
        return _show(event, layout, preview, checkout, 400,
                     "This form has expired or did not come from this page. Check your details and submit again.")
    source = "preview" if preview else ("widget" if layout == "widget" else "event_page")
    connection = connection_for(event.organizer_id)  # read once, for the consent box and the outbox rows
    checkout = _guarded(read_checkout, event, request.form, source, is_test=preview, connection=connection)
    if checkout.order is None:
        return _show(event, layout, preview, checkout, 422, "Please check the highlighted fields.")
    warning = started.test_domain_warning(checkout.order)
    if warning and request.form.get(started.CONFIRM_FIELD) != "1":  # warned before it is placed
        checkout.errors["test_domain"] = warning
        return _show(event, layout, preview, checkout, 422, "Klaviyo would drop this test order's events: see why "
                     "above the button.")
    if refusal := limits.admit(event.id, nonce, count_address=not preview):  # before any more database work
        return _show(event, layout, preview, checkout, 429, refusal)
    if not preview and (problem := _too_many_for(event, checkout.order.email)):
        limits.give_back_form_use(nonce)
        checkout.errors["email"] = problem
        return _show(event, layout, preview, checkout, 422, "Please check the highlighted fields.")
    try:
        order = place_order(event, checkout.order, connection=connection)
    except SoldOut as exc:
        limits.give_back_form_use(nonce)
        checkout.errors[f"qty-{exc.ticket_type.id}"] = (f"Only {exc.remaining} left." if exc.remaining else "Sold out.")
        return _show(event, layout, preview, checkout, 409, "Someone was quicker: tickets ran out while you were choosing.")
    return see_other("storefront.confirmation", token=order.public_token, w=1 if layout == "widget" else None)


def _too_many_for(event: Event, email: str) -> str | None:
    """The organizer's limit of orders per e-mail address for this event, if this one would pass it."""
    if not event.max_orders_per_email:
        return None
    placed = db.session.scalar(select(func.count()).select_from(Order).where(
        Order.event_id == event.id, func.lower(Order.email) == email.strip().lower(), Order.status != "cancelled"))
    if placed >= event.max_orders_per_email:
        return (f"This e-mail address already has {placed} {'order' if placed == 1 else 'orders'} for this event, "
                "the most the organizer allows.")
    return None


@bp.post("/<any(e,w):kind>/<public_id>/checkout/started")
@csrf.exempt  # checked with the signed form token, like the checkout itself
def checkout_started(kind, public_id):
    """The checkout form's change requests (htmx): keep the checkout for Started Checkout once it has an e-mail and a
    ticket; for a test purchase, answer with the warning about addresses Klaviyo drops."""
    event, preview = _event_for_sale(public_id)
    if not _form_token_ok(event):
        return "", 400
    return started.capture(event, request.form, preview, "widget" if kind == "w" else "page")


@bp.app_context_processor
def _checkout_session():
    return {"new_checkout_session": started.new_token}


def _order_by_token(token: str) -> Order:
    order = db.session.scalar(select(Order).where(Order.public_token == token))
    if order is None:
        abort(404)
    return order


@bp.get("/orders/<token>")
def confirmation(token):
    order = _order_by_token(token)
    is_owner = current_user.is_authenticated and current_user.id == order.organizer_id
    connection = connection_for(order.organizer_id) if is_owner else None
    show_sync = bool(is_owner and connection and connection.status != "disconnected")
    template = "storefront/confirmation_widget.html" if request.args.get("w") else "storefront/confirmation.html"
    rows = _sync_rows(order) if show_sync else []
    return render(template, order=order, event=order.event, show_sync=show_sync, sync_rows=rows,
                  **sync_status.context(order, rows))


@bp.get("/orders/<token>/sync")
def sync_panel(token):
    """The live sync panel: each Klaviyo event of this order from queued to accepted. Owner only."""
    order = _order_by_token(token)
    if not (current_user.is_authenticated and current_user.id == order.organizer_id):
        abort(404)
    rows = _sync_rows(order)
    return render("storefront/confirmation.html", block="sync_panel", order=order, event=order.event,
                  show_sync=True, sync_rows=rows, **sync_status.context(order, rows))


def _sync_rows(order: Order) -> list[OutboxEvent]:
    return list(db.session.scalars(select(OutboxEvent).where(OutboxEvent.order_id == order.id).order_by(OutboxEvent.id)))
