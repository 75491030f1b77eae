"""Security headers on every answer: a strict Content-Security-Policy (no inline script or style anywhere),
framing only for the widget and the pages shown inside it, and no caching of pages with personal data."""
from urllib.parse import urlsplit

from flask import current_app, request


def _in_widget() -> bool:
    endpoint = request.endpoint or ""
    if not endpoint.startswith("storefront."):
        return False
    return (endpoint in {"storefront.widget", "storefront.sync_panel"} or request.args.get("w") == "1"
            or (request.view_args or {}).get("kind") == "w")


def _origin(url: str) -> str:
    parts = urlsplit(url or "")
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else ""


def _policy(framed: bool) -> str:
    # Connect posts to us and is redirected to Klaviyo's consent page: form-action must allow that origin.
    klaviyo = _origin(current_app.config.get("KLAVIYO_OAUTH_BASE", ""))
    return "; ".join([
        # Style attributes that scripts set at run time (htmx's swaps, sizes) are allowed; <style> blocks are not.
        "default-src 'self'", "script-src 'self'", "style-src 'self'", "style-src-attr 'unsafe-inline'",
        "img-src 'self' data:",
        "connect-src 'self'", "object-src 'none'", "base-uri 'self'",
        f"form-action 'self' {klaviyo}".strip(),
        # The widget lives inside organizers' own sites, whichever they are; nothing else may be framed.
        "frame-ancestors *" if framed else "frame-ancestors 'self'",
    ])


def _personal() -> bool:
    """Pages with organizers' or buyers' details: organizer pages and buyers' confirmation pages."""
    path = request.path
    return path.startswith(("/manage/", "/auth/", "/orders/")) or (request.endpoint or "").startswith("storefront.")


def init_app(app):
    @app.after_request
    def security_headers(response):
        framed = _in_widget()
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        if response.mimetype == "text/html":
            response.headers.setdefault("Content-Security-Policy", _policy(framed))
            if _personal():
                response.headers.setdefault("Cache-Control", "no-store")
        if not framed:
            response.headers.setdefault("X-Frame-Options", "SAMEORIGIN")
        return response
