"""The one module that talks to Klaviyo: OAuth token calls, account lookup, and event delivery.

Every call returns plainly what Klaviyo answered, or raises KlaviyoUnavailable when no answer came
(timeout, refused or dropped connection). Deciding what to do about an answer is the caller's job.
"""
import json
import threading
import time
from dataclasses import dataclass, field

import requests
from requests.structures import CaseInsensitiveDict
from authlib.integrations.base_client import OAuthError
from authlib.integrations.flask_client import OAuth
from authlib.integrations.requests_client import OAuth2Session
from flask import current_app

JSON_API = "application/vnd.api+json"
_local = threading.local()


class KlaviyoUnavailable(Exception):
    """No HTTP answer came back from Klaviyo: a timeout, a refused or a dropped connection."""


class TokenRejected(Exception):
    """Klaviyo's token endpoint refused a grant; `error` is the OAuth error code, e.g. invalid_grant."""

    def __init__(self, error: str, description: str | None = None):
        super().__init__(f"{error}: {description}" if description else error)
        self.error = error
        self.description = description


@dataclass
class ApiResponse:
    status: int
    headers: CaseInsensitiveDict  # HTTP header names are case-insensitive: Retry-After is retry-after
    body: dict | None
    latency_ms: int
    errors: list[dict] = field(default_factory=list)

    def __post_init__(self):
        self.headers = CaseInsensitiveDict(self.headers)

    @property
    def accepted(self) -> bool:
        return self.status in (200, 201, 202)

    @property
    def retry_after(self) -> int | None:
        value = self.headers.get("Retry-After")
        try:
            return max(int(value), 0) if value is not None else None
        except ValueError:
            return None

    def error_text(self) -> str:
        if not self.errors:
            return f"HTTP {self.status}"
        return "; ".join(e.get("detail") or e.get("title") or e.get("code", "") for e in self.errors)

    def error_pointer(self) -> str | None:
        for error in self.errors:
            source = error.get("source") or {}
            if source.get("pointer") or source.get("parameter"):
                return source.get("pointer") or source.get("parameter")
        return None


def _config(key):
    return current_app.config[key]


def _http() -> requests.Session:
    """One pooled HTTP session per thread, so keep-alive connections are reused."""
    session = getattr(_local, "session", None)
    if session is None:
        session = _local.session = requests.Session()
    return session


# --- OAuth -------------------------------------------------------------------------------------------

def init_oauth(app, state_store=None) -> None:
    """Register Klaviyo with Authlib for the browser part of the flow (authorize + code exchange).
    `state_store` keeps the state and PKCE verifier server-side (Authlib's cache interface)."""
    registry = OAuth(app, cache=state_store)
    registry.register(
        "klaviyo",
        client_id=app.config["KLAVIYO_CLIENT_ID"],
        client_secret=app.config["KLAVIYO_CLIENT_SECRET"],
        authorize_url=app.config["KLAVIYO_OAUTH_BASE"].rstrip("/") + "/oauth/authorize",
        access_token_url=app.config["KLAVIYO_API_BASE"].rstrip("/") + "/oauth/token",
        client_kwargs={
            "scope": app.config["KLAVIYO_SCOPES"],
            "code_challenge_method": "S256",
            "token_endpoint_auth_method": "client_secret_basic",
            "default_timeout": app.config["KLAVIYO_TIMEOUT"],
        },
    )
    app.extensions["klaviyo_oauth"] = registry.klaviyo


def oauth_app():
    return current_app.extensions["klaviyo_oauth"]


def authorize_redirect(redirect_uri: str, scopes: list[str] | None = None):
    """Send the browser to Klaviyo's consent page, with state and a PKCE S256 challenge, asking for `scopes`
    (by default the configured KLAVIYO_SCOPES)."""
    if scopes:
        return oauth_app().authorize_redirect(redirect_uri, scope=" ".join(scopes))
    return oauth_app().authorize_redirect(redirect_uri)


def exchange_code() -> dict:
    """Finish the callback: check state, exchange the code with the PKCE verifier. Raises OAuthError."""
    try:
        token = oauth_app().authorize_access_token()
    except requests.RequestException as exc:  # no answer, or an HTTP error status (5xx, 429)
        raise KlaviyoUnavailable(type(exc).__name__) from exc
    except ValueError as exc:  # a non-JSON answer from the token endpoint
        raise OAuthError(error="server_error", description="Klaviyo's token endpoint gave an unreadable answer.") from exc
    if not isinstance(token, dict) or not token.get("access_token"):
        raise OAuthError(error="server_error", description="Klaviyo's token endpoint answered without a token.")
    return token


def _token_session() -> OAuth2Session:
    return OAuth2Session(
        _config("KLAVIYO_CLIENT_ID"), _config("KLAVIYO_CLIENT_SECRET"),
        token_endpoint_auth_method="client_secret_basic",
    )


def refresh_token(refresh_token: str) -> dict:
    """Trade a refresh token for a new access token (and maybe a new refresh token)."""
    url = _config("KLAVIYO_API_BASE").rstrip("/") + "/oauth/token"
    with _token_session() as session:
        try:
            token = session.refresh_token(url, refresh_token=refresh_token, timeout=_config("KLAVIYO_TIMEOUT"))
        except OAuthError as exc:
            raise TokenRejected(exc.error or "invalid_grant", exc.description) from exc
        except requests.RequestException as exc:  # no answer, or an HTTP error status (5xx, 429)
            raise KlaviyoUnavailable(type(exc).__name__) from exc
        except ValueError as exc:
            raise KlaviyoUnavailable("unreadable answer from the token endpoint") from exc
    if not isinstance(token, dict) or not token.get("access_token"):
        raise KlaviyoUnavailable("the token endpoint answered without a token")
    return token


def revoke(refresh_token: str) -> None:
    """Revoke a refresh token (and so the installation's access). Raises KlaviyoUnavailable on no answer."""
    url = _config("KLAVIYO_API_BASE").rstrip("/") + "/oauth/revoke"
    with _token_session() as session:
        try:
            response = session.revoke_token(url, token=refresh_token, token_type_hint="refresh_token",
                                            timeout=_config("KLAVIYO_TIMEOUT"))
        except requests.RequestException as exc:
            raise KlaviyoUnavailable(type(exc).__name__) from exc
    if response.status_code >= 500:
        raise KlaviyoUnavailable(f"revoke answered HTTP {response.status_code}")


# --- API ---------------------------------------------------------------------------------------------

def _api(method: str, path: str, access_token: str, body: dict | None = None,
         params: dict | None = None) -> ApiResponse:
    headers = {
        "Authorization": f"Bearer {access_token}",
        "revision": _config("KLAVIYO_API_REVISION"),
        "Accept": JSON_API,
    }
    data = None
    if body is not None:
        headers["Content-Type"] = JSON_API
        data = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    url = _config("KLAVIYO_API_BASE").rstrip("/") + path
    started = time.perf_counter()
    try:
        response = _http().request(method, url, headers=headers, data=data, params=params,
                                   timeout=_config("KLAVIYO_TIMEOUT"))
    except requests.RequestException as exc:
        _local.session = None  # a broken pooled connection must not be reused
        raise KlaviyoUnavailable(type(exc).__name__) from exc
    latency = int((time.perf_counter() - started) * 1000)
    parsed = None
    if response.content:
        try:
            parsed = response.json()
        except ValueError:
            parsed = None
    errors = parsed.get("errors", []) if isinstance(parsed, dict) else []
    return ApiResponse(response.status_code, response.headers, parsed, latency, errors)


def get_accounts(access_token: str) -> ApiResponse:
    return _api("GET", "/api/accounts", access_token)


def create_event(access_token: str, body: dict) -> ApiResponse:
    return _api("POST", "/api/events", access_token, body)


def bulk_create_events(access_token: str, body: dict) -> ApiResponse:
    return _api("POST", "/api/event-bulk-create-jobs", access_token, body)


def get_metrics(access_token: str, params: dict | None = None) -> ApiResponse:
    """One page of the account's metrics (up to 200); `page[cursor]` in params for the next one."""
    return _api("GET", "/api/metrics", access_token, params=params)


def get_events(access_token: str, params: dict | None = None) -> ApiResponse:
    """One page of the account's events (up to 200), e.g. filtered by metric and time, to read ours back."""
    return _api("GET", "/api/events", access_token, params=params)


def get_flows(access_token: str, params: dict | None = None) -> ApiResponse:
    """One page of the account's flows (up to 50), e.g. filtered by name."""
    return _api("GET", "/api/flows", access_token, params=params)


def create_flow(access_token: str, body: dict) -> ApiResponse:
    return _api("POST", "/api/flows", access_token, body)


def create_segment(access_token: str, body: dict) -> ApiResponse:
    return _api("POST", "/api/segments", access_token, body)


def get_lists(access_token: str, params: dict | None = None) -> ApiResponse:
    """One page of the account's lists (up to 10); `page[cursor]` in params for the next one."""
    return _api("GET", "/api/lists", access_token, params=params)


def create_list(access_token: str, body: dict) -> ApiResponse:
    return _api("POST", "/api/lists", access_token, body)


def bulk_subscribe_profiles(access_token: str, body: dict) -> ApiResponse:
    return _api("POST", "/api/profile-subscription-bulk-create-jobs", access_token, body)
