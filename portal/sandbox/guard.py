"""The sandbox's admin endpoints (``/_sandbox/*``) answer this machine's own tools, never a web page.

The sandbox has no login, and its admin endpoints reset it, inject faults, uninstall the app and list every
event it received. So the sandbox listens on loopback only (``require_loopback``), and these endpoints:

- want a Host header that names this machine (127.0.0.1, localhost, ::1): a page that reaches the port under
  a name of its own (DNS rebinding) is refused;
- take JSON only when they change something: an HTML form (urlencoded, multipart or text/plain), which any web
  page can post cross-site without asking first, is refused;
- refuse a request that says it comes from a page of another origin (Origin, or Sec-Fetch-Site). The tests,
  the benchmarks, scripts and curl send neither header.
"""
from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from flask import jsonify, request

ADMIN_PREFIX = "/_sandbox/"
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
FORM_TYPES = {"application/x-www-form-urlencoded", "multipart/form-data", "text/plain"}
SAME_SITE = {"same-origin", "none"}  # Sec-Fetch-Site of a page of our own, or of a person typing the URL


def is_loopback(host: str | None) -> bool:
    """Is host (a name or an address, without port or brackets) this machine's loopback?"""
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def require_loopback(host: str) -> str | None:
    """None when the sandbox may listen on host, else why not (one line)."""
    if is_loopback(host.strip("[]")):
        return None
    return (f"the sandbox listens on loopback only (127.0.0.1, ::1 or localhost), not {host}: it has no login, "
            "and its /_sandbox/ endpoints reset it and list every event it received")


def _refuse(status: int, message: str):
    response = jsonify({"error": message})
    response.status_code = status
    return response


def check_admin_request():
    """before_request: refuse what a web page, rather than a local tool, could have sent to /_sandbox/*."""
    if not request.path.startswith(ADMIN_PREFIX):
        return None
    try:
        hostname = urlsplit(f"//{request.host}").hostname
    except ValueError:
        hostname = None
    if not is_loopback(hostname):
        return _refuse(403, f"The sandbox's admin endpoints answer only under a loopback name "
                            f"(127.0.0.1, localhost, [::1]), not Host: {request.host[:100]}.")
    if request.method in SAFE_METHODS:
        return None
    origin = request.headers.get("Origin")
    if origin is not None and origin != f"{request.scheme}://{request.host}":
        return _refuse(403, "The sandbox's admin endpoints take no requests from web pages of another origin.")
    if request.headers.get("Sec-Fetch-Site", "none") not in SAME_SITE:
        return _refuse(403, "The sandbox's admin endpoints take no cross-site requests.")
    if request.mimetype in FORM_TYPES or (request.get_data(cache=True) and not request.is_json):
        return _refuse(415, "The sandbox's admin endpoints take JSON (Content-Type: application/json), never a form.")
    return None
