"""The Klaviyo connection's health as the organizer sees it: the alert banner on every organizer page (Reconnect,
or Retry failed), whether Klaviyo kept a test order's events (the order page's round-trip check), the double-send
guard's warning, the incident history and the Started Checkout switch in View Details.

Views only read and render; the writes (retry, look again, the switch) are POSTs that call down into portal.sync.
"""
from flask import Blueprint, abort, flash, redirect, request, url_for
from flask_login import current_user, login_required
from sqlalchemy import select

from portal.extensions import db
from portal.htmx import render, see_other
from portal.orders.models import Order
from portal.sync import abandoned, incidents, metric_guard, outbox, verdicts, verify
from portal.sync.connection import connection_for
from portal.sync.models import EVENT, FAILED, OutboxEvent
from portal.sync.queue import enqueue_delivery

bp = Blueprint("klaviyo_health", __name__, url_prefix="/manage/integrations/klaviyo")
RETRY_AT_MOST = 5000


@bp.app_context_processor
def health_for_templates():
    """Functions, so a page pays for the queries only where it shows them."""
    def alert():
        if not current_user.is_authenticated:
            return None
        return incidents.trouble(current_user.id)

    def guard():
        return metric_guard.state(current_user.id) if current_user.is_authenticated else None

    def history():
        return incidents.history(current_user.id) if current_user.is_authenticated else []

    def started_checkout_on():
        return abandoned.enabled(current_user.id) if current_user.is_authenticated else False

    return {"klaviyo_alert": alert, "klaviyo_guard": guard, "klaviyo_incidents": history,
            "started_checkout_on": started_checkout_on, "klaviyo_order_check": order_check_context}


def _back(default_endpoint: str):
    """Back to the page the form was on (only a path of this site), else the given page."""
    target = request.form.get("next") or ""
    if target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return redirect(target, code=303)
    return see_other(default_endpoint)


@bp.post("/retry-failed")
@login_required
def retry_failed():
    """The banner's Retry failed: every failed event of this organizer goes again, with a fresh retry window."""
    rows = list(db.session.scalars(select(OutboxEvent).where(
        OutboxEvent.organizer_id == current_user.id, OutboxEvent.status == FAILED).limit(RETRY_AT_MOST)))
    retried = sum(1 for row in rows if outbox.retry(row))
    db.session.commit()
    if retried:
        enqueue_delivery(current_user.id)
        flash(f"{retried} failed {'event goes' if retried == 1 else 'events go'} to Klaviyo again.", "success")
    else:
        flash("Nothing has failed: there is nothing to retry.", "info")
    return _back("integrations.index")


@bp.post("/started-checkout")
@login_required
def started_checkout():
    """Turn Started Checkout (abandoned checkouts) on or off."""
    on = request.form.get("on") == "1"
    abandoned.set_enabled(current_user.id, on)
    flash("Started Checkout is on: checkouts left unfinished reach Klaviyo." if on else
          "Started Checkout is off: nothing is sent for unfinished checkouts.", "success")
    return see_other("integrations.details")


@bp.post("/guard")
@login_required
def guard_check():
    """Look at the account's metrics again (after changing something in Klaviyo, say)."""
    connection = connection_for(current_user.id)
    if connection is None or not connection.is_active:
        abort(404)
    metric_guard.request_check(current_user.id)
    flash("Looking at your Klaviyo account's metrics again.", "info")
    return _back("integrations.index")


def _test_order_or_404(order_id: int) -> Order:
    order = db.session.get(Order, order_id)
    if order is None or order.organizer_id != current_user.id or not order.is_test:
        abort(404)
    return order


def order_check_context(order: Order) -> dict:
    """What the order page's "Is it in Klaviyo?" card needs."""
    rows = list(db.session.scalars(select(OutboxEvent).where(OutboxEvent.order_id == order.id,
                                                             OutboxEvent.kind == EVENT).order_by(OutboxEvent.id)))
    connection = connection_for(order.organizer_id)
    found = verdicts.verdicts(connection, rows)
    return {"order": order, "check_rows": rows, "verdicts": found,
            "checking": any(v.state == "waiting" for v in found.values())
            or any(row.status in ("pending", "claimed") for row in rows)}


@bp.get("/orders/<int:order_id>/check")
@login_required
def order_check(order_id):
    """The round-trip check of a test order's events (polls itself while something is not settled)."""
    order = _test_order_or_404(order_id)
    return render("integrations/_order_check.html", c=order_check_context(order))


@bp.post("/orders/<int:order_id>/check")
@login_required
def order_check_again(order_id):
    order = _test_order_or_404(order_id)
    verify.look_again(order)
    flash("Looking for this order's events in Klaviyo again.", "info")
    return redirect(url_for("orders.detail", order_id=order.id), code=303)
