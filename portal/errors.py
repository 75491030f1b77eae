"""Error pages: an expired form, a page that does not exist (or is another organizer's), a request too large."""
from flask import render_template
from flask_wtf.csrf import CSRFError

from portal.htmx import is_htmx


def init_app(app):
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
