"""Who is logged in: the organizer of a session that is still valid, and where a logged-out visitor goes.

A session is valid while its generation matches the organizer's (logout, a new password and "log out
everywhere" raise it, so copies of the cookie stop working too) and it has been used within
SESSION_IDLE_SECONDS.
"""
import time

from flask import current_app, redirect, request, session, url_for
from flask_login import login_user

from portal.auth.models import Organizer
from portal.extensions import db, login_manager
from portal.htmx import is_htmx


def _now() -> int:
    return int(time.time())


def start_session(organizer: Organizer) -> None:
    """Log the organizer in, in a fresh session of their current generation."""
    session.clear()
    login_user(organizer)
    session["gen"] = organizer.session_generation
    session["seen"] = _now()


def init_app(app):
    login_manager.login_view = "auth.login"
    login_manager.login_message = "Please log in to continue."
    login_manager.login_message_category = "info"
    login_manager.session_protection = "basic"

    @login_manager.user_loader
    def load_user(user_id: str):
        if not (user_id.isascii() and user_id.isdigit()):
            return None
        organizer = db.session.get(Organizer, int(user_id))
        now = _now()
        idle = current_app.config["SESSION_IDLE_SECONDS"]
        if organizer is None or session.get("gen") != organizer.session_generation \
                or now - int(session.get("seen") or 0) > idle:
            session.clear()
            return None
        if now - session["seen"] >= 60:  # at most one cookie update a minute
            session["seen"] = now
        return organizer

    @login_manager.unauthorized_handler
    def unauthorized():
        login_url = url_for("auth.login", next=request.full_path.rstrip("?") if request.method in ("GET", "HEAD") else None)
        if is_htmx():
            # Never swap a login page into a fragment: send the whole window there.
            response = current_app.make_response(("", 401))
            response.headers["HX-Redirect"] = login_url
            return response
        return redirect(login_url)
