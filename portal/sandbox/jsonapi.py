"""JSON:API error documents shaped like Klaviyo's (which come from Django REST Framework)."""

from __future__ import annotations

import json
import uuid

from flask import Response

JSONAPI = "application/vnd.api+json"

TITLES = {
    "invalid": "Invalid input.",
    "parse_error": "Malformed request.",
    "not_authenticated": "Authentication credentials were not provided.",
    "authentication_failed": "Incorrect authentication credentials.",
    "permission_denied": "You do not have permission to perform this action.",
    "not_found": "Not found.",
    "method_not_allowed": "Method not allowed.",
    "unsupported_media_type": "Unsupported media type.",
    "throttled": "Request was throttled.",
    "error": "A server error occurred.",
    "service_unavailable": "Service unavailable.",
}


def error(status: int, code: str, detail: str, *, pointer: str | None = None,
          parameter: str | None = None) -> dict:
    """One error object: id, status, code, title, detail, source, meta."""
    source = {}
    if pointer is not None:
        source["pointer"] = pointer
    if parameter is not None:
        source["parameter"] = parameter
    return {"id": str(uuid.uuid4()), "status": status, "code": code,
            "title": TITLES.get(code, "Error."), "detail": detail, "source": source, "meta": {}}


def errors_response(status: int, errors: list[dict], headers: dict | None = None) -> Response:
    body = json.dumps({"errors": errors})
    return Response(body, status=status, content_type=JSONAPI, headers=headers or {})


def error_response(status: int, code: str, detail: str, *, headers: dict | None = None,
                   **source) -> Response:
    return errors_response(status, [error(status, code, detail, **source)], headers)


def fault_response(status: int, retry_after: int | None) -> Response:
    """The answer for an injected failure status."""
    if status == 429:
        wait = retry_after if retry_after is not None else 1
        return error_response(429, "throttled",
                              f"Request was throttled. Expected available in {wait} seconds.",
                              headers={"Retry-After": str(wait)})
    code = {500: "error", 502: "service_unavailable", 503: "service_unavailable",
            504: "service_unavailable", 401: "authentication_failed", 403: "permission_denied",
            404: "not_found"}.get(status, "invalid" if status < 500 else "error")
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return error_response(status, code, f"Injected fault: HTTP {status}.", headers=headers)
