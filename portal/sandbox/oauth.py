"""OAuth 2.1 with PKCE, as Klaviyo runs it: authorize (consent page), token, revoke."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from flask import Blueprint, current_app, g, jsonify, redirect, render_template, request

from portal.sandbox import store
from portal.sandbox.context import account, accounts, db
from portal.sandbox.settings import KNOWN_SCOPES, scope_words

bp = Blueprint("oauth", __name__, url_prefix="/oauth")

VERIFIER_RE = re.compile(r"^[a-zA-Z0-9\-._~]{43,128}$")
CHALLENGE_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")  # base64url of a SHA-256, no padding
AUTHORIZE_PARAMS = ("response_type", "client_id", "redirect_uri", "scope", "state",
                    "code_challenge", "code_challenge_method")


def s256(verifier: str) -> str:
    """The PKCE S256 challenge for a verifier."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _with_query(uri: str, **params: str) -> str:
    parts = urlsplit(uri)
    query = parse_qsl(parts.query, keep_blank_values=True)
    query += [(k, v) for k, v in params.items() if v is not None]
    return urlunsplit(parts._replace(query=urlencode(query)))


def _error_page(title: str, message: str, status: int = 400):
    return render_template("sandbox/oauth_error.html", title=title, message=message), status


def _oauth_error(status: int, error: str, description: str | None = None, **headers):
    body = {"error": error}
    if description:
        body["error_description"] = description
    response = jsonify(body)
    response.status_code = status
    response.headers.update(headers)
    response.headers["Cache-Control"] = "no-store"
    return response


# --- authorize -----------------------------------------------------------------


def _authorize_problem(args) -> str | None:
    """The first thing wrong with the (client- and redirect-checked) authorize request."""
    for name in AUTHORIZE_PARAMS:
        if len(args.getlist(name)) > 1:
            return f"The '{name}' parameter must be given once."
    missing = [name for name in AUTHORIZE_PARAMS if not args.get(name)]
    if missing:
        return f"Missing required parameter(s): {', '.join(missing)}."
    if args["response_type"] != "code":
        return "response_type must be 'code'."
    if args["code_challenge_method"] != "S256":
        return "code_challenge_method must be 'S256'."
    if not CHALLENGE_RE.match(args["code_challenge"]):
        return "code_challenge must be the base64url-encoded SHA-256 of the code_verifier (43 characters)."
    scopes = args["scope"].split(" ")
    unknown = [s for s in scopes if s not in KNOWN_SCOPES]
    if unknown:
        return f"Unknown scope(s): {', '.join(unknown)}. Scopes are space-separated, e.g. 'accounts:read events:write'."
    return None


@bp.get("/authorize")
def authorize():
    """Check the app's request and show the consent page."""
    config = current_app.config
    client_id = request.args.get("client_id")
    redirect_uri = request.args.get("redirect_uri")
    if not client_id or len(request.args.getlist("client_id")) > 1 or client_id != config["SANDBOX_CLIENT_ID"]:
        return _error_page("Unknown app", "This link names an app (client_id) that is not registered "
                           "with this Klaviyo sandbox.")
    if (not redirect_uri or len(request.args.getlist("redirect_uri")) > 1
            or redirect_uri not in config["SANDBOX_REDIRECT_URIS"]):
        return _error_page("Redirect URL not registered",
                           "The redirect_uri in this link is not one of the app's registered "
                           "redirect URLs, so the sandbox will not send you there.")
    problem = _authorize_problem(request.args)
    state = request.args.get("state")
    if problem:
        return redirect(_with_query(redirect_uri, error="invalid_request",
                                    error_description=problem, state=state or None))
    scopes = list(dict.fromkeys(request.args["scope"].split(" ")))
    nonce = secrets.token_urlsafe(32)
    params = {"client_id": client_id, "redirect_uri": redirect_uri, "state": state,
              "scopes": scopes, "code_challenge": request.args["code_challenge"]}
    store.create_consent(db(), nonce, params, time.time() + config["SANDBOX_CONSENT_LIFETIME"])
    page = render_template("sandbox/consent.html", nonce=nonce, accounts=accounts(),
                           app_name=config["SANDBOX_APP_NAME"], redirect_host=urlsplit(redirect_uri).netloc,
                           scopes=[(s, scope_words(s)) for s in scopes])
    return page, 200, {"Cache-Control": "no-store"}


@bp.post("/authorize")
def decide():
    """The organizer's answer on the consent page: Allow or Deny."""
    params = store.take_consent(db(), request.form.get("nonce", ""), time.time())
    if params is None:
        return _error_page("This page has expired",
                           "This consent page was already answered or is too old. "
                           "Start connecting again from the app.")
    redirect_uri, state = params["redirect_uri"], params["state"]
    if request.form.get("decision") != "allow":
        return redirect(_with_query(redirect_uri, error="access_denied",
                                    error_description="The user denied access to their Klaviyo account.",
                                    state=state))
    account_id = request.form.get("account_id") or accounts()[0]["id"]
    if account(account_id) is None:
        return _error_page("Unknown account", "Choose one of the listed Klaviyo accounts.")
    code = secrets.token_urlsafe(32)
    store.create_code(db(), code, client_id=params["client_id"], redirect_uri=redirect_uri,
                      challenge=params["code_challenge"], scopes=" ".join(params["scopes"]),
                      account_id=account_id, now=time.time(),
                      lifetime=current_app.config["SANDBOX_CODE_LIFETIME"])
    return redirect(_with_query(redirect_uri, code=code, state=state))


# --- token -----------------------------------------------------------------------


def _client_ok() -> bool:
    """HTTP Basic client authentication; a secret in the body does not count."""
    auth = request.authorization
    config = current_app.config
    if auth is None or auth.type != "basic" or auth.username is None or auth.password is None:
        return False
    body_client = request.form.get("client_id")
    if body_client is not None and body_client != auth.username:
        return False
    return (hmac.compare_digest(auth.username, config["SANDBOX_CLIENT_ID"])
            and hmac.compare_digest(auth.password, config["SANDBOX_CLIENT_SECRET"]))


def _invalid_client():
    return _oauth_error(401, "invalid_client", **{"WWW-Authenticate": 'Basic realm="klaviyo"'})


def _new_tokens() -> tuple[str, str]:
    # Klaviyo's access tokens are JWTs of about 536 characters; ours are opaque but just
    # as long, so a too-short database column shows up here and not in production.
    return "kat_" + secrets.token_urlsafe(399), "krt_" + secrets.token_urlsafe(48)


def _token_body(access_token: str, refresh_token: str, scopes: str):
    response = jsonify({"access_token": access_token, "token_type": "Bearer",
                        "expires_in": current_app.config["SANDBOX_ACCESS_TOKEN_LIFETIME"],
                        "refresh_token": refresh_token, "scope": scopes})
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    return response


def _remember(row) -> None:
    g.log_ctx = {"account_id": row["account_id"], "installation_id": row["installation_id"],
                 "grant_id": row["grant_id"]}


@bp.post("/token")
def token():
    """Exchange an authorization code, or a refresh token, for tokens."""
    if not _client_ok():
        return _invalid_client()
    if request.mimetype != "application/x-www-form-urlencoded":
        return _oauth_error(400, "invalid_request",
                            "The body must be application/x-www-form-urlencoded.")
    grant_type = request.form.get("grant_type")
    if grant_type == "authorization_code":
        return _exchange_code()
    if grant_type == "refresh_token":
        return _refresh()
    if not grant_type:
        return _oauth_error(400, "invalid_request", "grant_type is required.")
    return _oauth_error(400, "unsupported_grant_type")


def _exchange_code():
    form, config, now = request.form, current_app.config, time.time()
    missing = [k for k in ("code", "code_verifier", "redirect_uri") if not form.get(k)]
    if missing:
        return _oauth_error(400, "invalid_request", f"Missing: {', '.join(missing)}.")
    if not VERIFIER_RE.match(form["code_verifier"]):
        return _oauth_error(400, "invalid_request",
                            "code_verifier must match ^[a-zA-Z0-9\\-._~]{43,128}$.")
    conn = db()
    row = store.get_code(conn, form["code"])
    if row is None or row["client_id"] != config["SANDBOX_CLIENT_ID"]:
        return _oauth_error(400, "invalid_grant", "The authorization code is not valid.")
    if row["used_at"] is not None:
        # A replayed code may be stolen: the tokens issued from it stop working too.
        if row["grant_id"]:
            store.revoke_grant(conn, row["grant_id"], "code_replay", now)
        return _oauth_error(400, "invalid_grant", "The authorization code was already used.")
    if row["expires_at"] < now:
        return _oauth_error(400, "invalid_grant", "The authorization code has expired.")
    if form["redirect_uri"] != row["redirect_uri"]:
        return _oauth_error(400, "invalid_grant",
                            "redirect_uri does not match the one used to get the code.")
    if not hmac.compare_digest(s256(form["code_verifier"]), row["challenge"]):
        return _oauth_error(400, "invalid_grant", "Code challenge failed.")
    access_token, refresh_token = _new_tokens()
    grant_id = store.redeem_code(conn, row, access_token=access_token, refresh_token=refresh_token,
                                 now=now, access_lifetime=config["SANDBOX_ACCESS_TOKEN_LIFETIME"],
                                 refresh_lifetime=config["SANDBOX_REFRESH_TOKEN_LIFETIME"])
    if grant_id is None:  # another request spent the code a moment ago
        return _oauth_error(400, "invalid_grant", "The authorization code was already used.")
    _remember(store.find_access_token(conn, access_token))
    return _token_body(access_token, refresh_token, row["scopes"])


def _refresh():
    form, config, now = request.form, current_app.config, time.time()
    if not form.get("refresh_token"):
        return _oauth_error(400, "invalid_request", "Missing: refresh_token.")
    conn = db()
    row = store.find_refresh_token(conn, form["refresh_token"])
    if row is not None:
        _remember(row)
    if (row is None or row["client_id"] != config["SANDBOX_CLIENT_ID"]
            or row["rotated_at"] is not None or row["grant_revoked_at"] is not None
            or row["expires_at"] < now):
        return _oauth_error(400, "invalid_grant")
    requested = form.get("scope")
    if requested and not set(requested.split(" ")) <= set(row["scopes"].split(" ")):
        return _oauth_error(400, "invalid_scope", "A refresh cannot add scopes.")
    access_token, refresh_token = _new_tokens()
    if not store.rotate_refresh_token(conn, row, access_token=access_token, refresh_token=refresh_token,
                                      now=now, access_lifetime=config["SANDBOX_ACCESS_TOKEN_LIFETIME"],
                                      refresh_lifetime=config["SANDBOX_REFRESH_TOKEN_LIFETIME"]):
        return _oauth_error(400, "invalid_grant")
    return _token_body(access_token, refresh_token, row["scopes"])


# --- revoke ------------------------------------------------------------------------


@bp.post("/revoke")
def revoke():
    """Disconnect: the installation's refresh token and all its access tokens stop working."""
    if not _client_ok():
        return _invalid_client()
    token_value = request.form.get("token")
    if not token_value:
        return _oauth_error(400, "invalid_request", "Missing: token.")
    hint = request.form.get("token_type_hint")
    conn = db()
    finders = [store.find_refresh_token, store.find_access_token]
    if hint == "access_token":
        finders.reverse()
    row = next((r for r in (find(conn, token_value) for find in finders) if r is not None), None)
    # RFC 7009: an unknown token is not an error, the answer is the same.
    if row is not None and row["client_id"] == current_app.config["SANDBOX_CLIENT_ID"]:
        _remember(row)
        store.end_installation(conn, row["installation_id"], via="oauth_revoke", now=time.time(),
                               token_type_hint=hint)
    response = jsonify({})
    response.headers["Cache-Control"] = "no-store"
    return response
