"""The organizer's order page: tickets, attendees, the Klaviyo sync timeline; cancel, refund, transfer."""
import uuid

from flask import Blueprint, abort, flash, request
from flask_login import current_user, login_required
from sqlalchemy import select

from portal.extensions import db
from portal.klaviyo.payloads import REASON_TEXT, attendee_reasons
from portal.orders import forms, lifecycle, sync_status
from portal.orders.models import Order, Ticket
from portal.orders.service import snapshot
from portal.htmx import render, see_other
from portal.sync import outbox
from portal.sync.models import OutboxEvent
from portal.sync.queue import enqueue_delivery

bp = Blueprint("orders", __name__, url_prefix="/manage/orders")


def get_order_or_404(order_id: int) -> Order:
    order = db.session.get(Order, order_id)
    if order is None or order.organizer_id != current_user.id:
        abort(404)
    return order


@bp.get("/<int:order_id>")
@login_required
def detail(order_id):
    order = get_order_or_404(order_id)
    reasons = dict(attendee_reasons(snapshot(order)))
    rows = list(db.session.scalars(select(OutboxEvent).where(OutboxEvent.order_id == order.id).order_by(OutboxEvent.id)))
    return render("orders/detail.html", block="timeline", order=order, event=order.event, rows=rows,
                  reasons=reasons, reason_text=REASON_TEXT, **sync_status.context(order, rows))


@bp.post("/<int:order_id>/events/<int:outbox_id>/retry")
@login_required
def retry_event(order_id, outbox_id):
    order = get_order_or_404(order_id)
    row = db.session.get(OutboxEvent, outbox_id)
    if row is None or row.order_id != order.id:
        abort(404)
    if outbox.retry(row):
        db.session.commit()
        enqueue_delivery(order.organizer_id)
        flash(f"{row.metric} goes to Klaviyo again in a moment.", "success")
    return see_other("orders.detail", order_id=order.id)


def _who() -> str:
    return f"{current_user.name} <{current_user.email}>"


def _action_page(template: str, order: Order, form, status: int = 200, **extra):
    return render(template, order=order, event=order.event, values=form.values, errors=form.errors, **extra), status


@bp.route("/<int:order_id>/cancel", methods=["GET", "POST"])
@login_required
def cancel(order_id):
    """Cancel the order (a confirmation page first): every ticket cancelled, places released, refund optional."""
    order = get_order_or_404(order_id)
    if order.is_cancelled:
        flash("This order is already cancelled.", "info")
        return see_other("orders.detail", order_id=order.id)
    if request.method in ("GET", "HEAD"):
        return _action_page("orders/cancel.html", order, forms.Form(values={"refund": "1", "include_fees": "1"}))
    form = forms.read_cancel(request.form)
    if form.errors:
        return _action_page("orders/cancel.html", order, form, 422)
    try:
        lifecycle.cancel_order(order, refund=form.refund, include_fees=form.include_fees, reason=form.reason, by=_who())
    except lifecycle.Refused as exc:
        flash(str(exc), "info")
        return see_other("orders.detail", order_id=order.id)
    flash("Order cancelled" + (" and refunded" if form.refund else "") + ". Klaviyo gets Cancelled Order, and the "
          "reminders for these tickets stop.", "success")
    return see_other("orders.detail", order_id=order.id)


@bp.route("/<int:order_id>/refund", methods=["GET", "POST"])
@login_required
def refund(order_id):
    """Refund chosen tickets or an amount, never more than was paid minus earlier refunds."""
    order = get_order_or_404(order_id)
    if order.refundable <= 0:
        flash("Everything paid on this order has been refunded already.", "info")
        return see_other("orders.detail", order_id=order.id)
    if request.method in ("GET", "HEAD"):
        form = forms.Form(values={"include_fees": "1", "request_key": uuid.uuid4().hex, "ticket": []})
        return _action_page("orders/refund.html", order, form)
    form = forms.read_refund(order, request.form)
    if form.errors:
        return _action_page("orders/refund.html", order, form, 422)
    try:
        done = lifecycle.refund_order(order, ticket_ids=form.ticket_ids, amount=form.amount,
                                      include_fees=form.include_fees, reason=form.reason, by=_who(),
                                      request_key=form.request_key)
    except lifecycle.AlreadyDone as exc:
        flash(str(exc), "info")
        return see_other("orders.detail", order_id=order_id)
    except lifecycle.Refused as exc:
        form.errors["amount"] = str(exc)
        return _action_page("orders/refund.html", db.session.get(Order, order_id), form, 409)
    flash(f"Refunded {order.currency} {done.amount:,.2f}. Klaviyo gets Refunded Order.", "success")
    return see_other("orders.detail", order_id=order.id)


def _ticket_or_404(order: Order, ticket_id: str) -> Ticket:
    ticket = db.session.get(Ticket, ticket_id)
    if ticket is None or ticket.order_id != order.id:
        abort(404)
    return ticket


@bp.route("/<int:order_id>/tickets/<ticket_id>/transfer", methods=["GET", "POST"])
@login_required
def transfer(order_id, ticket_id):
    """Hand a ticket to someone else: the new attendee gets Registered Attendee, the old one loses the ticket."""
    order = get_order_or_404(order_id)
    ticket = _ticket_or_404(order, ticket_id)
    if not ticket.is_valid or order.is_cancelled:
        flash("Only a valid ticket can be handed to someone else.", "error")
        return see_other("orders.detail", order_id=order.id)
    if request.method in ("GET", "HEAD"):
        return _action_page("orders/transfer.html", order, forms.Form(values={}), ticket=ticket)
    form = forms.read_transfer(request.form, order.event.country)
    if form.errors:
        return _action_page("orders/transfer.html", order, form, 422, ticket=ticket)
    try:
        lifecycle.transfer_ticket(order, ticket, form.attendee, reason=form.reason, by=_who())
    except lifecycle.Refused as exc:
        form.errors["email"] = str(exc)
        order = db.session.get(Order, order_id)
        return _action_page("orders/transfer.html", order, form, 422, ticket=db.session.get(Ticket, ticket_id))
    flash(f"The {ticket.type_name} ticket now belongs to {form.attendee.first_name} {form.attendee.last_name}.",
          "success")
    return see_other("orders.detail", order_id=order.id)
