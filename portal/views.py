"""Pieces every blueprint shares: the home redirect, health check, htmx-aware rendering, error pages."""
import logging

from flask import Blueprint, current_app, jsonify, redirect, render_template, request, url_for
from flask_login import current_user
from flask_wtf.csrf import CSRFError
from sqlalchemy import text

from portal.extensions import db, login_manager

bp = Blueprint("core", __name__)
log = logging.getLogger("portal")


def is_htmx() -> bool:
    return request.headers.get("HX-Request") == "true"


def render(template: str, block: str | None = None, **context):
    """Render a page, or only its named block when htmx asked for it (the page's fragment)."""
    if block and is_htmx():
        app = current_app._get_current_object()
        app.update_template_context(context)
        tmpl = app.jinja_env.get_template(template)
        html = "".join(tmpl.blocks[block](tmpl.new_context(context)))
    else:
        html = render_template(template, **context)
    response = current_app.make_response(html)
    response.vary.add("HX-Request")
    return response


def see_other(endpoint: str, **values):
    """Redirect after a non-GET; htmx follows HX-Redirect, browsers a 303."""
    url = url_for(endpoint, **values)
    if is_htmx():
        response = current_app.make_response("")
        response.headers["HX-Redirect"] = url
        return response
    return redirect(url, code=303)


@bp.get("/")
def index():
    if current_user.is_authenticated:
        return redirect(url_for("integrations.index"))
    return redirect(url_for("auth.login"))


@bp.get("/help/klaviyo")
def klaviyo_help():
    """The organizer's guide to the Klaviyo integration (public)."""
    return render_template("help/klaviyo.html")


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
        from portal.sync.queue import redis_connection

        redis_connection().ping()
        checks["redis"] = "ok"
    except Exception as exc:  # noqa: BLE001
        checks["redis"] = f"error: {type(exc).__name__}"
    healthy = all(v == "ok" for v in checks.values())
    return jsonify(status="ok" if healthy else "unhealthy", checks=checks), 200 if healthy else 503


def _in_widget() -> bool:
    endpoint = request.endpoint or ""
    if not endpoint.startswith("storefront."):
        return False
    return (endpoint in {"storefront.widget", "storefront.sync_panel"} or request.args.get("w") == "1"
            or (request.view_args or {}).get("kind") == "w")


def init_app(app):
    login_manager.login_view = "auth.login"
    login_manager.login_message = "Please log in to continue."
    login_manager.login_message_category = "info"

    @login_manager.user_loader
    def load_user(user_id: str):
        from portal.auth.models import Organizer

        return db.session.get(Organizer, int(user_id)) if user_id.isdigit() else None

    @login_manager.unauthorized_handler
    def unauthorized():
        login_url = url_for("auth.login", next=request.full_path.rstrip("?") if request.method == "GET" else None)
        if is_htmx():
            # Never swap a login page into a fragment: send the whole window there.
            response = current_app.make_response(("", 401))
            response.headers["HX-Redirect"] = login_url
            return response
        return redirect(login_url)

    @app.errorhandler(CSRFError)
    def csrf_error(error):
        message = "This form has expired or was not sent from the portal. Reload the page and try again."
        if is_htmx():
            return render_template("partials/error.html", message=message), 400
        return render_template("error.html", title="Please try again", message=message), 400

    @app.errorhandler(404)
    def not_found(error):
        if is_htmx():
            return render_template("partials/error.html", message="That page does not exist."), 404
        return render_template("error.html", title="Not found",
                               message="That page does not exist, or it belongs to another account."), 404

    @app.errorhandler(413)
    def too_large(error):
        return render_template("error.html", title="Too large", message="That request was too large."), 413

    @app.template_filter("when")
    def when(moment):
        """A moment in UTC, written for people: 15 Jul 2026, 18:00 UTC."""
        return moment.strftime("%-d %b %Y, %H:%M UTC") if moment else "—"

    @app.template_filter("local")
    def local(moment, zone: str):
        """A moment in the event's own time zone."""
        from zoneinfo import ZoneInfo

        return moment.astimezone(ZoneInfo(zone)).strftime("%a %-d %b %Y, %-I:%M %p %Z") if moment else "—"

    @app.template_filter("duration")
    def duration(seconds):
        seconds = int(seconds or 0)
        if seconds < 60:
            return f"{seconds} s"
        if seconds < 3600:
            return f"{seconds // 60} min"
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"

    @app.template_filter("phone")
    def phone(number):
        """An E.164 number written the international way: +1 617-555-0142."""
        import phonenumbers

        try:
            return phonenumbers.format_number(phonenumbers.parse(number), phonenumbers.PhoneNumberFormat.INTERNATIONAL)
        except phonenumbers.NumberParseException:
            return number

    @app.template_filter("money")
    def money(amount, currency: str):
        return f"{currency} {amount:,.2f}"

    @app.context_processor
    def navigation():
        endpoint = request.endpoint or ""
        section = endpoint.split(".")[0]
        if section in {"orders"}:
            section = "events"
        return {"nav_section": section}

    @app.after_request
    def security_headers(response):
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        # The widget, and the checkout and confirmation pages shown inside it, are meant to be embedded
        # by organizers' own sites; everything else is not.
        if not _in_widget():
            response.headers.setdefault("X-Frame-Options", "SAMEORIGIN")
        return response
