"""Events: create, edit, ticket types, discount codes, make live, widget customization."""
from flask import Blueprint, abort, flash, request
from flask_login import current_user, login_required
from sqlalchemy import func, select

from portal.events.forms import DiscountForm, EventForm, TicketTypeForm, WidgetForm
from portal.events.models import DiscountCode, Event, TicketType
from portal.extensions import db
from portal.htmx import render, see_other
from portal.orders import lifecycle, listing
from portal.orders.models import CANCELLED, CHANNEL_TEXT, ORDER_STATUS_TEXT, Order
from portal.types import utcnow

bp = Blueprint("events", __name__, url_prefix="/manage/events")


def get_event_or_404(event_id: int) -> Event:
    """The current organizer's event; anyone else's is simply not found."""
    event = db.session.get(Event, event_id)
    if event is None or event.organizer_id != current_user.id:
        abort(404)
    return event


def _ticket_type_or_404(event: Event, ticket_type_id: int) -> TicketType:
    ticket_type = db.session.get(TicketType, ticket_type_id)
    if ticket_type is None or ticket_type.event_id != event.id:
        abort(404)
    return ticket_type


@bp.get("/")
@login_required
def index():
    events = list(db.session.scalars(select(Event).where(Event.organizer_id == current_user.id)
                                     .order_by(Event.starts_at)))
    sold = dict(db.session.execute(select(Order.event_id, func.count()).where(
        Order.organizer_id == current_user.id).group_by(Order.event_id)).all())
    return render("events/index.html", events=events, order_counts=sold)


@bp.route("/new", methods=["GET", "POST"])
@login_required
def new():
    form = EventForm()
    if form.validate_on_submit():
        event = Event(organizer_id=current_user.id)
        _apply(form, event)
        db.session.add(event)
        db.session.commit()
        flash("Event created. Add a ticket type, then make it live.", "success")
        return see_other("events.detail", event_id=event.id)
    return render("events/form.html", form=form, event=None), 422 if form.errors else 200


@bp.get("/<int:event_id>")
@login_required
def detail(event_id):
    event = get_event_or_404(event_id)
    return render("events/detail.html", event=event, ticket_form=TicketTypeForm(formdata=None),
                  discount_form=DiscountForm(formdata=None))


@bp.route("/<int:event_id>/edit", methods=["GET", "POST"])
@login_required
def edit(event_id):
    event = get_event_or_404(event_id)
    form = EventForm(obj=event) if request.method in ("GET", "HEAD") else EventForm()
    if request.method in ("GET", "HEAD"):
        form.starts_at.data = event.starts_at.astimezone(_zone(event)).replace(tzinfo=None)
        form.ends_at.data = event.ends_at.astimezone(_zone(event)).replace(tzinfo=None)
    if form.validate_on_submit():
        starts_at, ends_at, venue = form.aware(form.starts_at.data), form.aware(form.ends_at.data), form.venue.data.strip()
        moving = event.is_live and (starts_at, ends_at, venue) != (event.starts_at, event.ends_at, event.venue)
        told = lifecycle.holders_to_tell(event) if moving else 0
        if told and request.form.get("confirm_change") != "1":
            # Say who will be told before anything is saved.
            return render("events/form.html", form=form, event=event, confirm_change=told)
        previous = (event.starts_at, event.ends_at, event.venue)
        _apply(form, event)  # first, so Event Changed carries the event's new name too
        if moving:
            lifecycle.change_event(event, previous=previous, by=_who())
        db.session.commit()
        if told:
            lifecycle.wake(event.organizer_id)
            flash(f"Event saved. {told} {'person' if told == 1 else 'people'} holding a ticket will get Event Changed "
                  "in Klaviyo.", "success")
        else:
            flash("Event saved.", "success")
        return see_other("events.detail", event_id=event.id)
    return render("events/form.html", form=form, event=event), 422 if form.errors else 200


def _who() -> str:
    return f"{current_user.name} <{current_user.email}>"


def _zone(event):
    from zoneinfo import ZoneInfo

    return ZoneInfo(event.timezone)


def _apply(form: EventForm, event: Event) -> None:
    event.name = form.name.data.strip()
    event.venue = form.venue.data.strip()
    event.timezone = form.timezone.data
    event.currency = form.currency.data
    event.country = form.country.data
    event.max_orders_per_email = form.max_orders_per_email.data or None
    event.description = (form.description.data or "").strip()
    event.starts_at = form.aware(form.starts_at.data)
    event.ends_at = form.aware(form.ends_at.data)


@bp.post("/<int:event_id>/live")
@login_required
def make_live(event_id):
    event = get_event_or_404(event_id)
    if event.is_cancelled:
        flash("This event is cancelled, so it cannot go live again. Create a new event instead.", "error")
    elif not event.ticket_types:
        flash("Add at least one ticket type before making the event live.", "error")
    else:
        event.status = "live"
        event.went_live_at = event.went_live_at or utcnow()
        db.session.commit()
        flash("Your event is live: the Event Page and widget now sell tickets.", "success")
    return see_other("events.detail", event_id=event.id)


@bp.post("/<int:event_id>/draft")
@login_required
def make_draft(event_id):
    event = get_event_or_404(event_id)
    if event.is_cancelled:
        flash("A cancelled event stays cancelled: it can't become a draft again.", "error")
        return see_other("events.detail", event_id=event.id)
    event.status = "draft"
    db.session.commit()
    flash("The event is a draft again: the public can no longer buy tickets.", "info")
    return see_other("events.detail", event_id=event.id)


@bp.post("/<int:event_id>/ticket-types")
@login_required
def add_ticket_type(event_id):
    event = get_event_or_404(event_id)
    form = TicketTypeForm()
    if form.validate_on_submit():
        db.session.add(TicketType(event_id=event.id, name=form.name.data.strip(), price=form.price.data,
                                  fee=form.fee.data or 0, capacity=form.capacity.data))
        db.session.commit()
        flash(f"Ticket type “{form.name.data.strip()}” added.", "success")
        return see_other("events.detail", event_id=event.id)
    return render("events/detail.html", event=event, ticket_form=form, discount_form=DiscountForm(formdata=None)), 422


@bp.route("/<int:event_id>/ticket-types/<int:ticket_type_id>", methods=["GET", "POST"])
@login_required
def edit_ticket_type(event_id, ticket_type_id):
    event = get_event_or_404(event_id)
    ticket_type = _ticket_type_or_404(event, ticket_type_id)
    form = TicketTypeForm(obj=ticket_type)
    if form.validate_on_submit():
        if form.capacity.data < ticket_type.sold:
            form.capacity.errors.append(f"{ticket_type.sold} tickets are sold already; capacity can't go below that.")
        else:
            ticket_type.name, ticket_type.price = form.name.data.strip(), form.price.data
            ticket_type.fee, ticket_type.capacity = form.fee.data or 0, form.capacity.data
            db.session.commit()
            flash("Ticket type saved.", "success")
            return see_other("events.detail", event_id=event.id)
    return render("events/ticket_type.html", event=event, ticket_type=ticket_type, form=form), \
        422 if form.errors else 200


@bp.post("/<int:event_id>/ticket-types/<int:ticket_type_id>/delete")
@login_required
def delete_ticket_type(event_id, ticket_type_id):
    event = get_event_or_404(event_id)
    ticket_type = _ticket_type_or_404(event, ticket_type_id)
    if ticket_type.sold:
        flash("Tickets of this type were sold, so it can't be deleted. Set its capacity to what is sold instead.", "error")
    else:
        db.session.delete(ticket_type)
        db.session.commit()
        flash("Ticket type deleted.", "info")
    return see_other("events.detail", event_id=event.id)


@bp.post("/<int:event_id>/discounts")
@login_required
def add_discount(event_id):
    event = get_event_or_404(event_id)
    form = DiscountForm()
    if form.validate_on_submit():
        code = form.code.data.strip()
        exists = db.session.scalar(select(DiscountCode).where(DiscountCode.event_id == event.id,
                                                              func.lower(DiscountCode.code) == code.lower()))
        if exists:
            form.code.errors.append("This event has that code already.")
        else:
            db.session.add(DiscountCode(event_id=event.id, code=code, kind=form.kind.data, amount=form.amount.data))
            db.session.commit()
            flash(f"Discount code {code} added.", "success")
            return see_other("events.detail", event_id=event.id)
    return render("events/detail.html", event=event, ticket_form=TicketTypeForm(formdata=None), discount_form=form), 422


@bp.post("/<int:event_id>/discounts/<int:discount_id>/delete")
@login_required
def delete_discount(event_id, discount_id):
    event = get_event_or_404(event_id)
    discount = db.session.get(DiscountCode, discount_id)
    if discount is None or discount.event_id != event.id:
        abort(404)
    db.session.delete(discount)
    db.session.commit()
    flash("Discount code removed.", "info")
    return see_other("events.detail", event_id=event.id)


@bp.route("/<int:event_id>/widget", methods=["GET", "POST"])
@login_required
def widget(event_id):
    """Widget Customization: settings on the left, the real widget live in an iframe on the right."""
    event = get_event_or_404(event_id)
    form = WidgetForm(obj=event)
    if request.method == "POST":
        if form.validate():
            event.accent_color = form.accent_color.data.lower()
            event.button_label = form.button_label.data.strip()
            event.show_description = form.show_description.data
            db.session.commit()
        return render("events/widget.html", block="preview", event=event, form=form), 200 if not form.errors else 422
    return render("events/widget.html", event=event, form=form)


@bp.route("/<int:event_id>/cancel", methods=["GET", "POST"])
@login_required
def cancel(event_id):
    """Cancel the event and all its orders, with or without refunds (a confirmation page first)."""
    event = get_event_or_404(event_id)
    if event.is_cancelled:
        flash("This event is already cancelled.", "info")
        return see_other("events.detail", event_id=event.id)
    open_orders = db.session.scalar(select(func.count()).select_from(Order).where(
        Order.event_id == event.id, Order.status != CANCELLED))
    values, errors = {"refund": "1", "include_fees": "1"}, {}
    if request.method == "POST":
        values = {key: request.form.get(key, "") for key in ("reason", "refund", "include_fees")}
        reason = values["reason"].strip()
        if not reason:
            errors["reason"] = "Say why, in a few words: Klaviyo's Cancelled Order carries it as Reason."
        elif len(reason) > 500:
            errors["reason"] = "Use at most 500 characters."
        else:
            try:
                count = lifecycle.cancel_event(event, refund=bool(values["refund"]),
                                               include_fees=bool(values["include_fees"]), reason=reason, by=_who())
            except lifecycle.Refused as exc:
                flash(str(exc), "error")
                return see_other("events.detail", event_id=event.id)
            refunded = " and refunded" if values["refund"] else ""
            flash(f"Event cancelled. {count} {'order was' if count == 1 else 'orders were'} cancelled{refunded}; "
                  "Klaviyo gets Cancelled Order for each.", "success")
            return see_other("events.detail", event_id=event.id)
    return render("events/cancel.html", event=event, open_orders=open_orders, values=values, errors=errors), \
        422 if errors else 200


@bp.post("/<int:event_id>/previewed")
@login_required
def previewed(event_id):
    """The organizer has looked at the Event Page or the widget: step 2 of "Verifying your installation".
    The page posts this once it has loaded, so that opening a page (a GET) changes nothing."""
    event = get_event_or_404(event_id)
    if event.preview_opened_at is None:
        event.preview_opened_at = utcnow()
        db.session.commit()
    return "", 204


@bp.get("/<int:event_id>/orders")
@login_required
def orders(event_id):
    """The event's orders: filters, search by name or e-mail, pages of 50, each order's Klaviyo sync status."""
    event = get_event_or_404(event_id)
    filters = listing.read_filters(request.args)
    return render("events/orders.html", block="results", event=event, filters=filters,
                  page=listing.orders_page(event, filters), channels=listing.channels_of(event.id),
                  statuses=ORDER_STATUS_TEXT, kinds=listing.KINDS, channel_text=CHANNEL_TEXT)
