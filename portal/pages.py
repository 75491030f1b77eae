"""Pages that belong to no feature: the home redirect, the organizers' guides, and the health check."""
from flask import Blueprint, jsonify, redirect, render_template, url_for
from flask_login import current_user
from sqlalchemy import text

from portal.extensions import db
from portal.klaviyo import metrics
from portal.sync.queue import redis_connection

bp = Blueprint("core", __name__)


@bp.get("/")
def index():
    if current_user.is_authenticated:
        return redirect(url_for("integrations.index"))
    return redirect(url_for("auth.login"))


@bp.get("/help/klaviyo")
def klaviyo_help():
    """The organizer's guide to the Klaviyo integration (public)."""
    return render_template("help/klaviyo.html", purposes=metrics.PURPOSE)


@bp.get("/help/channels")
def channels_help():
    """The organizer's guide to selling through Shopify and Wix (public)."""
    return render_template("help/channels.html")


@bp.get("/healthz")
def healthz():
    """Is the database reachable, and is Redis? 200 only when both are."""
    checks = {}
    try:
        db.session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means unhealthy
        checks["database"] = f"error: {type(exc).__name__}"
    finally:
        db.session.rollback()
    try:
        redis_connection().ping()
        checks["redis"] = "ok"
    except Exception as exc:  # noqa: BLE001
        checks["redis"] = f"error: {type(exc).__name__}"
    healthy = all(v == "ok" for v in checks.values())
    return jsonify(status="ok" if healthy else "unhealthy", checks=checks), 200 if healthy else 503
