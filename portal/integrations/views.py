"""The Integrations page and the Klaviyo card: Connect, View Details, Disconnect."""
from flask import Blueprint, abort, current_app, flash, request, url_for
from flask_login import current_user, login_required
from redis.exceptions import RedisError

from portal.extensions import db
from portal.htmx import is_htmx, render, see_other
from portal.integrations import flows, service
from portal.sync import backfill, connection as klaviyo, limiter
from portal.sync.models import DISCONNECTED, BackfillRun

bp = Blueprint("integrations", __name__, url_prefix="/manage/integrations")


def redirect_uri() -> str:
    """The exact redirect URI registered with the Klaviyo app."""
    return current_app.config["PUBLIC_BASE_URL"].rstrip("/") + url_for("integrations.callback")


def _page(panel: str | None = None, block: str | None = None, **extra):
    """The page's context. When htmx asks for one block of it (`block`), only what that block shows is worked
    out: the live queue polls every 2 s and needs neither the checklist nor a finished backfill's figures."""
    only = block if block and is_htmx() else None  # None: the whole page

    def shows(*blocks: str) -> bool:
        return only is None or only in blocks

    connection = klaviyo.connection_for(current_user.id)
    context = {
        "connection": connection,
        "panel": panel,
        "configured": bool(current_app.config.get("KLAVIYO_CLIENT_ID")),
        "checklist": checklist(connection) if connection and connection.is_active and shows("checklist") else None,
        "sandbox_url": current_app.config.get("KLAVIYO_SANDBOX_URL"),
        "redirect_uri": redirect_uri(),
        "missing_features": service.missing_features(connection),
        **extra,
    }
    if panel == "details" and connection:
        if shows("panel", "queue"):
            context["stats"] = service.queue_stats(current_user.id)
        run = backfill.current_run(current_user.id)
        context["run"] = run
        # The queue block only asks whether a run is still sending.
        wanted = shows("panel", "backfill") or (run is not None and run.status == backfill.RUNNING)
        context["run_progress"] = backfill.progress(run) if run and wanted else None
        if shows("panel", "queue"):
            try:
                context["meter"] = limiter.meter(klaviyo.installation_key(connection))
            except RedisError:  # the meter is informative; Redis being down must not break the page
                context["meter"] = None
    return context


@bp.get("/")
@login_required
def index():
    block = "klaviyo_card" if request.args.get("fragment") else None
    return render("integrations/index.html", block=block, **_page(block=block))


@bp.get("/klaviyo")
@login_required
def details():
    context = _page("details", block="panel")
    if context["connection"] is None or context["connection"].status == DISCONNECTED:
        return see_other("integrations.index")
    return render("integrations/index.html", block="panel", **context)


@bp.get("/klaviyo/queue")
@login_required
def queue_fragment():
    """The live queue figures inside View Details (polls itself)."""
    context = _page("details", block="queue")
    if context["connection"] is None:
        abort(404)
    return render("integrations/index.html", block="queue", **context)


@bp.get("/klaviyo/checklist")
@login_required
def checklist_fragment():
    """The install checklist (polls itself); there is none unless the connection is active."""
    context = _page(block="checklist")
    if context["checklist"] is None:  # e.g. polled from a tab left open after a disconnect
        abort(404)
    return render("integrations/index.html", block="checklist", **context)


@bp.post("/klaviyo/connect")
@login_required
def connect():
    """Send the organizer to Klaviyo to authorize (also used for Reconnect)."""
    if not current_app.config.get("KLAVIYO_CLIENT_ID"):
        flash("Klaviyo is not configured on this portal yet: its administrator sets KLAVIYO_CLIENT_ID and "
              "KLAVIYO_CLIENT_SECRET (see the README).", "error")
        return see_other("integrations.index")
    try:
        response = service.start_authorization(current_user.id, redirect_uri())
    except RedisError:
        flash("The portal cannot start a Klaviyo sign-in right now (its Redis is unreachable). Try again in a "
              "minute.", "error")
        return see_other("integrations.index")
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
        outcome = service.finish_authorization(current_user, request.args)
    except RedisError:
        outcome = service.Outcome("error", "The portal cannot finish the Klaviyo sign-in right now (its Redis is "
                                           "unreachable). Nothing was saved; click Connect again in a minute.")
    flash(outcome.message, outcome.category)
    return see_other("integrations.index")


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
    revoked = klaviyo.disconnect(connection)
    flows.cancel(connection.organizer_id)  # flows and segments still waiting are not made
    if revoked:
        flash("Disconnected from Klaviyo. Nothing more will be sent; what Klaviyo already has stays there.", "success")
    else:
        flash("Disconnected. Nothing more will be sent. Klaviyo could not be reached to revoke access; "
              "the portal will keep trying in the background.", "warning")
    return see_other("integrations.index")


def _connection_or_404():
    connection = klaviyo.connection_for(current_user.id)
    if connection is None or connection.status == DISCONNECTED:
        abort(404)
    return connection


def checklist(connection) -> list[dict]:
    """The four steps of "Verifying your installation", each ticked from real data, with where to go next."""
    state = service.checklist(connection.organizer_id)
    return [
        {"done": state.live_event, "title": "Create a test event and make it live",
         "href": url_for("events.new"), "action": "Create an event"},
        {"done": state.previewed, "title": "Open the Event Page or Widget Customization to preview it",
         "href": url_for("events.index"), "action": "Open your events"},
        {"done": state.test_order_id is not None, "title": "Complete a test ticket purchase from the preview",
         "href": url_for("events.index"), "action": "Buy a test ticket"},
        {"done": state.test_order_stored, "title": "Check Klaviyo for the new events", "note": state.test_order_note,
         "checking": state.checking,
         "href": url_for("orders.detail", order_id=state.test_order_id) if state.test_order_id else None,
         "action": "See the sync timeline"},
    ]


@bp.get("/klaviyo/backfill")
@login_required
def backfill_plan():
    """The dry run of "Send past orders to Klaviyo"."""
    context = _page("details", block="backfill")
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
        flash("Past orders are being sent already: the progress is below.", "info")
    else:
        backfill.start(current_user.id)
        flash("Sending past orders to Klaviyo. They are recorded there without starting any flow.", "success")
    return see_other("integrations.details")


@bp.get("/klaviyo/backfill/progress")
@login_required
def backfill_progress():
    context = _page("details", block="backfill")
    if context["connection"] is None or context["run"] is None:
        abort(404)
    return render("integrations/index.html", block="backfill", **context)


def _run_or_404(run_id: int):
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
        flash("Stopped sending past orders. Resume to carry on from where it stopped.", "info")
    return see_other("integrations.details")


@bp.post("/klaviyo/backfill/<int:run_id>/resume")
@login_required
def backfill_resume(run_id):
    run = _run_or_404(run_id)
    if run.status == "cancelled" and _connection_or_404().is_active:
        backfill.resume(run)
        flash("Sending past orders again, from where it stopped.", "success")
    return see_other("integrations.details")
