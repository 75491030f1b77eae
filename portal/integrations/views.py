"""The Integrations page and the Klaviyo card: Connect, View Details, Disconnect."""
import logging
from datetime import timedelta

from authlib.common.errors import AuthlibBaseError
from authlib.integrations.base_client import MismatchingStateError, OAuthError
from flask import Blueprint, abort, current_app, flash, request, url_for
from flask_login import current_user, login_required
from sqlalchemy import func, select

from portal.events.models import Event
from portal.extensions import db
from portal.integrations import service
from portal.integrations.models import DISCONNECTED
from portal.klaviyo import client
from portal.orders.models import Order
from portal.sync import backfill, limiter
from portal.sync.models import (
    CANCELLED,
    CLAIMED,
    FAILED,
    HELD,
    PENDING,
    SENT,
    OutboxEvent,
)
from portal.types import utcnow
from portal.views import render, see_other

bp = Blueprint("integrations", __name__, url_prefix="/manage/integrations")
log = logging.getLogger("portal.klaviyo")


def redirect_uri() -> str:
    """The exact redirect URI registered with the Klaviyo app."""
    return current_app.config["PUBLIC_BASE_URL"].rstrip("/") + url_for("integrations.callback")


def _page(panel: str | None = None, **extra):
    connection = service.connection_for(current_user.id)
    context = {
        "connection": connection,
        "panel": panel,
        "configured": bool(current_app.config.get("KLAVIYO_CLIENT_ID")),
        "checklist": checklist(connection) if connection and connection.is_active else None,
        "sandbox_url": current_app.config.get("KLAVIYO_SANDBOX_URL"),
        "redirect_uri": redirect_uri(),
        **extra,
    }
    if panel == "details" and connection:
        context["stats"] = queue_stats(current_user.id)
        run = backfill.current_run(current_user.id)
        context["run"] = run
        context["run_progress"] = backfill.progress(run) if run else None
        try:
            context["meter"] = limiter.meter(service.installation_key(connection))
        except Exception:  # noqa: BLE001 - the meter is informative; Redis being down must not break the page
            context["meter"] = None
    return context


@bp.get("/")
@login_required
def index():
    return render("integrations/index.html", block="klaviyo_card" if request.args.get("fragment") else None,
                  **_page())


@bp.get("/klaviyo")
@login_required
def details():
    context = _page("details")
    if context["connection"] is None or context["connection"].status == DISCONNECTED:
        return see_other("integrations.index")
    return render("integrations/index.html", block="panel", **context)


@bp.get("/klaviyo/queue")
@login_required
def queue_fragment():
    """The live queue figures inside View Details (polls itself)."""
    context = _page("details")
    if context["connection"] is None:
        abort(404)
    return render("integrations/index.html", block="queue", **context)


@bp.get("/klaviyo/checklist")
@login_required
def checklist_fragment():
    return render("integrations/index.html", block="checklist", **_page())


@bp.post("/klaviyo/connect")
@login_required
def connect():
    """Send the organizer to Klaviyo to authorize (also used for Reconnect)."""
    if not current_app.config.get("KLAVIYO_CLIENT_ID"):
        flash("Klaviyo is not configured on this portal: set KLAVIYO_CLIENT_ID and KLAVIYO_CLIENT_SECRET.", "error")
        return see_other("integrations.index")
    response = client.authorize_redirect(redirect_uri())
    if request.headers.get("HX-Request"):
        location = response.headers["Location"]
        response = current_app.make_response("")
        response.headers["HX-Redirect"] = location
    return response


@bp.get("/klaviyo/callback")
@login_required
def callback():
    """Klaviyo sends the organizer back here. Any failure stores nothing and says what to do."""
    try:
        token = client.exchange_code()
    except MismatchingStateError:
        return _fail("This Klaviyo sign-in was not started from this page, or it expired. Click Connect to start again.")
    except OAuthError as exc:
        if exc.error == "access_denied":
            return _fail("You cancelled in Klaviyo, so nothing was connected. Click Connect whenever you are ready.")
        if exc.error == "invalid_grant":
            return _fail("Klaviyo did not accept the sign-in code: it was already used or has expired. "
                         "Click Connect to try again.")
        if exc.error == "invalid_client":
            return _fail("Klaviyo did not recognise this portal's app credentials. An administrator should check "
                         "KLAVIYO_CLIENT_ID and KLAVIYO_CLIENT_SECRET.")
        detail = f" ({exc.description})" if exc.description else ""
        return _fail(f"Klaviyo could not complete the connection: {exc.error or 'error'}{detail}. Click Connect to try again.")
    except client.KlaviyoUnavailable:
        return _fail("Klaviyo could not be reached to finish connecting. Nothing was saved; try again in a minute.")
    except AuthlibBaseError:  # e.g. a callback with a valid state but no code
        return _fail("Klaviyo could not complete the connection: its answer had no sign-in code. Click Connect to try again.")

    granted = set((token.get("scope") or "").split())
    if "events:write" not in granted:
        _revoke_quietly(token)
        return _fail("Klaviyo did not grant permission to send events (events:write), so nothing was connected. "
                     "Click Connect and allow all requested permissions.")
    account = _fetch_account(token["access_token"])
    connection = service.connect(current_user, token, account)
    db.session.commit()
    service.after_connect(connection)
    if account is None or not account.accepted:
        flash("Connected to Klaviyo. The account details could not be loaded yet; use Refresh in View Details.", "warning")
    else:
        flash(f"Connected to Klaviyo account {connection.organization_name}.", "success")
    return see_other("integrations.index")


def _fetch_account(access_token: str):
    """The account lookup right after connecting, within Klaviyo's 1/s, 15/min limit for it."""
    try:
        if limiter.acquire(service.account_lookup_key(current_user.id), "accounts", max_wait=1.5):
            return None
    except Exception:  # noqa: BLE001 - without Redis, look it up anyway: it is one call
        pass
    try:
        return client.get_accounts(access_token)
    except client.KlaviyoUnavailable:
        return None


def _fail(message: str):
    flash(message, "error")
    return see_other("integrations.index")


def _revoke_quietly(token: dict) -> None:
    if token.get("refresh_token"):
        try:
            client.revoke(token["refresh_token"])
        except client.KlaviyoUnavailable:
            log.warning("could not revoke a token Klaviyo granted without events:write")


@bp.post("/klaviyo/account/refresh")
@login_required
def refresh_account():
    connection = _connection_or_404()
    error = service.refresh_account(connection)
    if error:
        flash(error, "error")
    else:
        flash("Account details refreshed from Klaviyo.", "success")
    return see_other("integrations.details")


@bp.get("/klaviyo/disconnect")
@login_required
def confirm_disconnect():
    context = _page("disconnect")
    if context["connection"] is None or context["connection"].status == DISCONNECTED:
        return see_other("integrations.index")
    return render("integrations/index.html", block="panel", **context)


@bp.post("/klaviyo/disconnect")
@login_required
def disconnect():
    connection = _connection_or_404()
    revoked = service.disconnect(connection)
    if revoked:
        flash("Disconnected from Klaviyo. Nothing more will be sent; what Klaviyo already has stays there.", "success")
    else:
        flash("Disconnected. Nothing more will be sent. Klaviyo could not be reached to revoke access; "
              "the portal will keep trying in the background.", "warning")
    return see_other("integrations.index")


def _connection_or_404():
    connection = service.connection_for(current_user.id)
    if connection is None or connection.status == DISCONNECTED:
        abort(404)
    return connection


def queue_stats(organizer_id: int) -> dict:
    """Counts by status, the age of the oldest pending event, and the last error, for View Details."""
    counts = dict(db.session.execute(
        select(OutboxEvent.status, func.count()).where(OutboxEvent.organizer_id == organizer_id)
        .group_by(OutboxEvent.status)
    ).all())
    oldest = db.session.scalar(select(func.min(OutboxEvent.created_at)).where(
        OutboxEvent.organizer_id == organizer_id, OutboxEvent.status.in_((PENDING, CLAIMED))))
    last_error = db.session.execute(
        select(OutboxEvent.last_error, OutboxEvent.metric, OutboxEvent.unique_id, OutboxEvent.order_id)
        .where(OutboxEvent.organizer_id == organizer_id, OutboxEvent.last_error.is_not(None))
        .order_by(OutboxEvent.id.desc()).limit(1)
    ).first()
    recent = db.session.scalar(select(func.count()).select_from(OutboxEvent).where(
        OutboxEvent.organizer_id == organizer_id, OutboxEvent.status == SENT,
        OutboxEvent.sent_at >= utcnow() - timedelta(seconds=60)))
    return {
        "sent": counts.get(SENT, 0),
        "pending": counts.get(PENDING, 0) + counts.get(CLAIMED, 0),
        "held": counts.get(HELD, 0),
        "failed": counts.get(FAILED, 0),
        "cancelled": counts.get(CANCELLED, 0),
        "oldest_pending_seconds": int((utcnow() - oldest).total_seconds()) if oldest else None,
        "last_error": last_error,
        "per_second": round((recent or 0) / 60, 1),
    }


def checklist(connection) -> list[dict]:
    """The four steps of "Verifying your installation", each ticked from real data."""
    organizer_id = connection.organizer_id
    live = db.session.scalar(select(func.count()).select_from(Event).where(
        Event.organizer_id == organizer_id, Event.status == "live"))
    previewed = db.session.scalar(select(func.count()).select_from(Event).where(
        Event.organizer_id == organizer_id, Event.preview_opened_at.is_not(None)))
    test_order = db.session.scalar(select(Order).where(Order.organizer_id == organizer_id, Order.is_test.is_(True))
                                   .order_by(Order.id.desc()).limit(1))
    accepted = False
    if test_order is not None:
        statuses = list(db.session.scalars(select(OutboxEvent.status).where(OutboxEvent.order_id == test_order.id)))
        accepted = bool(statuses) and all(status == SENT for status in statuses)
    return [
        {"done": bool(live), "title": "Create a test event and make it live",
         "href": url_for("events.new"), "action": "Create an event"},
        {"done": bool(previewed), "title": "Open the Event Page or Widget Customization to preview it",
         "href": url_for("events.index"), "action": "Open your events"},
        {"done": test_order is not None, "title": "Complete a test ticket purchase from the preview",
         "href": url_for("events.index"), "action": "Buy a test ticket"},
        {"done": accepted, "title": "Check Klaviyo for the new events",
         "href": url_for("orders.detail", order_id=test_order.id) if test_order else None,
         "action": "See the sync timeline"},
    ]



@bp.get("/klaviyo/backfill")
@login_required
def backfill_plan():
    """The dry run of "Send past orders to Klaviyo"."""
    context = _page("details")
    if context["connection"] is None or not context["connection"].is_active:
        abort(404)
    return render("integrations/index.html", block="backfill", plan=backfill.plan(current_user.id), **context)


@bp.post("/klaviyo/backfill")
@login_required
def backfill_start():
    connection = _connection_or_404()
    if not connection.is_active:
        flash("Reconnect Klaviyo before sending past orders.", "error")
        return see_other("integrations.details")
    run = backfill.current_run(current_user.id)
    if run and run.status == "running":
        flash("A backfill is running already.", "info")
    else:
        backfill.start(current_user.id)
        flash("Sending past orders to Klaviyo. They are recorded without triggering flows.", "success")
    return see_other("integrations.details")


@bp.get("/klaviyo/backfill/progress")
@login_required
def backfill_progress():
    context = _page("details")
    if context["connection"] is None or context["run"] is None:
        abort(404)
    return render("integrations/index.html", block="backfill", **context)


def _run_or_404(run_id: int):
    from portal.sync.models import BackfillRun

    run = db.session.get(BackfillRun, run_id)
    if run is None or run.organizer_id != current_user.id:
        abort(404)
    return run


@bp.post("/klaviyo/backfill/<int:run_id>/cancel")
@login_required
def backfill_cancel(run_id):
    run = _run_or_404(run_id)
    if run.status == "running":
        backfill.cancel(run)
        flash("Backfill stopped. Resume it to carry on where it stopped.", "info")
    return see_other("integrations.details")


@bp.post("/klaviyo/backfill/<int:run_id>/resume")
@login_required
def backfill_resume(run_id):
    run = _run_or_404(run_id)
    if run.status == "cancelled" and _connection_or_404().is_active:
        backfill.resume(run)
        flash("Backfill resumed.", "success")
    return see_other("integrations.details")
