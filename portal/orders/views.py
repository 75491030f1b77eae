"""The organizer's order page: tickets, attendees and the Klaviyo sync timeline."""
from flask import Blueprint, abort, flash
from flask_login import current_user, login_required
from sqlalchemy import select

from portal.extensions import db
from portal.klaviyo.payloads import REASON_TEXT, attendee_reasons
from portal.orders.models import Order
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
                  reasons=reasons, reason_text=REASON_TEXT)


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
        flash(f"{row.metric} will be sent again.", "success")
    return see_other("orders.detail", order_id=order.id)
