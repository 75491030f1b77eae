"""Who is logged in: loading the organizer of a session, and where a logged-out visitor is sent."""
from flask import current_app, redirect, request, url_for

from portal.auth.models import Organizer
from portal.extensions import db, login_manager
from portal.htmx import is_htmx


def init_app(app):
    login_manager.login_view = "auth.login"
    login_manager.login_message = "Please log in to continue."
    login_manager.login_message_category = "info"

    @login_manager.user_loader
    def load_user(user_id: str):
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
