"""Security headers on every answer. Only the widget and the pages shown inside it may be framed."""
from flask import request


def _in_widget() -> bool:
    endpoint = request.endpoint or ""
    if not endpoint.startswith("storefront."):
        return False
    return (endpoint in {"storefront.widget", "storefront.sync_panel"} or request.args.get("w") == "1"
            or (request.view_args or {}).get("kind") == "w")


def init_app(app):
    @app.after_request
    def security_headers(response):
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        # The widget, and the checkout and confirmation pages shown inside it, are meant to be embedded
        # by organizers' own sites; everything else is not.
        if not _in_widget():
            response.headers.setdefault("X-Frame-Options", "SAMEORIGIN")
        return response
