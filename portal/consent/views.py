"""List subscriptions, as the organizer sets them up from the Klaviyo card: turn them on, choose or create the
list, word the checkbox; and the consent box the checkout shows (a template global)."""
from flask import Blueprint, abort, flash, request, url_for
from flask_login import current_user, login_required

from portal.consent import lists, service
from portal.consent.models import EMAIL, LIST_MISSING, NO_PERMISSION, SMS
from portal.extensions import db
from portal.htmx import render, see_other
from portal.sync import connection as klaviyo, outbox
from portal.sync.models import DISCONNECTED, SUBSCRIPTION
from portal.sync.queue import enqueue_delivery

bp = Blueprint("consent", __name__, url_prefix="/manage/integrations/klaviyo/subscriptions")
TURNED_OFF = "cancelled: list subscriptions were turned off"


def _connection_or_404():
    connection = klaviyo.connection_for(current_user.id)
    if connection is None or connection.status == DISCONNECTED:
        abort(404)
    return connection


def _page(connection, values=None, errors=None, status=200):
    on = service.is_on(connection)
    missing = klaviyo.missing_scopes(connection, service.FEATURE) if on else []
    found, lists_error = ([], None)
    if on and not missing and connection.is_active:
        found, lists_error = lists.account_lists(connection)
    context = {
        "connection": connection, "on": on, "missing": missing, "settings": service.settings_for(current_user.id),
        "lists": found, "lists_error": lists_error, "counts": service.counts(current_user.id),
        "wording": {channel: service.wording(current_user.id, channel) for channel in (EMAIL, SMS)},
        "history": {channel: service.history(current_user.id, channel) for channel in (EMAIL, SMS)},
        "organizer_name": current_user.name, "values": values or {}, "errors": errors or {},
    }
    return render("consent/settings.html", **context), status


@bp.get("/")
@login_required
def settings():
    return _page(_connection_or_404())


@bp.post("/")
@login_required
def save_switches():
    """Turn list subscriptions on or off, and whether test purchases count."""
    connection = _connection_or_404()
    wanted = bool(request.form.get("enabled"))
    settings = service.ensure_settings(current_user.id)
    settings.include_test_orders = bool(request.form.get("include_test_orders"))
    if wanted and not service.is_on(connection):
        needs_more = klaviyo.turn_on(connection, service.FEATURE)
        resumed = outbox.resume(current_user.id, SUBSCRIPTION)
        db.session.commit()
        if resumed:
            enqueue_delivery(current_user.id)
        if needs_more:
            flash("List subscriptions are on. Klaviyo needs one more permission for them: click Reconnect, allow it "
                  "in Klaviyo, then choose the list.", "warning")
        else:
            flash("List subscriptions are on. Choose the list consenting buyers go to.", "success")
    elif not wanted and service.is_on(connection):
        klaviyo.turn_off(connection, service.FEATURE)
        outbox.cancel(current_user.id, TURNED_OFF, SUBSCRIPTION)
        db.session.commit()
        flash("List subscriptions are off: the checkbox is no longer shown and nobody is subscribed.", "success")
    else:
        db.session.commit()
        flash("Saved.", "success")
    return see_other("consent.settings")


def _use_list(list_id: str, name: str) -> None:
    settings = service.ensure_settings(current_user.id)
    settings.list_id, settings.list_name = list_id, name[:255]
    if settings.problem == LIST_MISSING:
        settings.problem = settings.problem_detail = settings.problem_at = None
    resumed = outbox.resume(current_user.id, SUBSCRIPTION)
    db.session.commit()
    if resumed:
        enqueue_delivery(current_user.id)


@bp.post("/list")
@login_required
def choose_list():
    """Use one of the account's lists, or create one and use it."""
    connection = _connection_or_404()
    if not service.is_on(connection) or klaviyo.missing_scopes(connection, service.FEATURE):
        flash("Turn list subscriptions on and reconnect Klaviyo first: choosing a list needs its permission.", "error")
        return see_other("consent.settings")
    values = {key: (request.form.get(key) or "").strip() for key in ("list_id", "new_list_name", "double_opt_in")}
    if request.form.get("action") == "create":
        name = values["new_list_name"]
        if not name or len(name) > 255:
            return _page(connection, values, {"new_list_name": "Name the new list (at most 255 characters)."}, 422)
        made, error = lists.create(connection, name, bool(values["double_opt_in"]))
        if error:
            return _page(connection, values, {"new_list_name": error}, 422)
        _use_list(made.id, made.name)
        flash(f"Created the list “{made.name}” in Klaviyo: consenting buyers are subscribed to it.", "success")
        return see_other("consent.settings")
    found, error = lists.account_lists(connection)
    chosen = next((item for item in found if item.id == values["list_id"]), None)
    if chosen is None:
        problem = error or "Choose one of your Klaviyo lists."
        return _page(connection, values, {"list_id": problem}, 422)
    _use_list(chosen.id, chosen.name)
    flash(f"Consenting buyers are subscribed to “{chosen.name}”.", "success")
    return see_other("consent.settings")


@bp.post("/wording")
@login_required
def save_wording():
    """A new version of the checkbox wording; orders keep the version their purchaser saw."""
    connection = _connection_or_404()
    values = {channel: (request.form.get(f"{channel}_text") or "").strip() for channel in (EMAIL, SMS)}
    errors = {f"{channel}_text": problem for channel, text in values.items()
              if (problem := service.check_wording(text))}
    if errors:
        return _page(connection, {f"{k}_text": v for k, v in values.items()}, errors, 422)
    saved = [row for channel, text in values.items()
             if (row := service.save_wording(current_user.id, channel, text, f"{current_user.name} <{current_user.email}>"))]
    db.session.commit()
    if saved:
        flash("Saved: " + ", ".join(f"{'e-mail' if r.channel == EMAIL else 'SMS'} wording version {r.version}"
                                    for r in saved) + ". New orders record this version.", "success")
    else:
        flash("The wording is unchanged.", "info")
    return see_other("consent.settings")


# --- for other pages: the Klaviyo card's notice, and the checkout's box -------------------------------

@bp.app_template_global("list_subscription_notice")
def notice(connection) -> dict | None:
    """What the Klaviyo card says when subscriptions wait for the organizer (beyond a missing permission, which
    the card already says), with where to fix it; None when nothing waits."""
    if not service.is_on(connection) or not connection.is_active or klaviyo.missing_scopes(connection, service.FEATURE):
        return None
    settings = service.settings_for(connection.organizer_id)
    href = url_for("consent.settings")
    if settings is None or not settings.list_id:
        return {"text": "Choose the Klaviyo list consenting buyers are subscribed to. Until then their "
                        "subscriptions wait; none is lost.", "action": "Choose the list", "href": href}
    if settings.problem == LIST_MISSING:
        return {"text": f"The Klaviyo list “{settings.list_name}” no longer exists. Choose another list: "
                        "subscriptions wait until you do, none is lost.", "action": "Choose another list", "href": href}
    if settings.problem == NO_PERMISSION:
        return {"text": "Klaviyo refused list subscriptions for lack of permission. Reconnect to grant it: "
                        "subscriptions wait until then, none is lost.", "action": None, "href": href}
    return None


@bp.app_template_global("marketing_consent")
def checkout_box(event) -> dict | None:
    """The consent box for this event's checkout (wording and version per channel), or None when the organizer
    does not subscribe buyers to a list."""
    if not service.is_on(klaviyo.connection_for(event.organizer_id)):
        return None
    name = service.organizer_name(event.organizer_id)
    return {channel: {"version": w.version, "text": w.text(name)}
            for channel, w in ((c, service.wording(event.organizer_id, c)) for c in (EMAIL, SMS))}
