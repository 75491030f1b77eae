"""The "Set up flows and segments" panel on the Klaviyo card: open it, add one recipe or all, retry, and the status
that polls itself while Klaviyo work runs."""
from flask import Blueprint, abort, flash, request
from flask_login import current_user, login_required

from portal.htmx import render, see_other
from portal.integrations import flows, views as integration_views
from portal.klaviyo import recipes
from portal.sync import connection as klaviyo

bp = Blueprint("flows", __name__, url_prefix="/manage/integrations/klaviyo/flows")


def _connection():
    connection = klaviyo.connection_for(current_user.id)
    return connection if connection is not None and connection.is_active else None


def _context(connection, **extra) -> dict:
    context = integration_views._page("flows", **extra)
    context["setup"] = flows.panel(current_user.id, connection)
    context["daily"] = flows.daily_left(connection)
    return context


@bp.get("/")
@login_required
def panel():
    connection = _connection()
    if connection is None:
        return see_other("integrations.index")
    return render("integrations/flows.html", block="panel", **_context(connection))


@bp.get("/status")
@login_required
def status():
    """The panel's status line, with each row's state swapped in out of band (polls itself while busy)."""
    connection = _connection()
    if connection is None:
        abort(404)
    return render("integrations/flows.html", block="flows_status", oob=True, **_context(connection))


def _answer(outcome: tuple[str, str]):
    category, message = outcome
    flash(message, category)
    return see_other("flows.panel")


@bp.post("/add/<key>")
@login_required
def add(key: str):
    """Add one recipe to Klaviyo (as a draft): it is queued for the worker, after the permission if needed."""
    if key not in recipes.BY_KEY:
        abort(404)
    connection = _connection()
    if connection is None:
        flash("Reconnect Klaviyo before adding flows and segments.", "error")
        return see_other("integrations.index")
    return _answer(flows.add(connection, key, request.form))


@bp.post("/all")
@login_required
def add_all():
    connection = _connection()
    if connection is None:
        flash("Reconnect Klaviyo before adding flows and segments.", "error")
        return see_other("integrations.index")
    return _answer(flows.add_all(connection, request.form))


@bp.post("/<int:item_id>/retry")
@login_required
def retry(item_id: int):
    connection = _connection()
    item = flows.item_or_none(current_user.id, item_id)
    if item is None or connection is None:
        abort(404)
    return _answer(flows.retry(connection, item))
