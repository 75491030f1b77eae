"""The Integrations page and the Klaviyo OAuth connection, over real HTTP against the sandbox: the card in each
state, View Details, the authorize request, the token exchange (Basic auth + PKCE), encrypted token storage,
every callback error, Reconnect, Disconnect (also when Klaviyo is unreachable) and the account refresh limit."""
import base64
import hashlib
import html
import re
import socket
import time
from datetime import timedelta
from urllib.parse import parse_qs, parse_qsl, urlsplit

import pytest
import requests
from sqlalchemy import func, select, text

from portal.crypto import decrypt
from portal.events.models import Event
from portal.extensions import db
from portal.sync.models import KlaviyoConnection
from portal.orders.models import Order
from portal.sync.models import OutboxEvent
from portal.types import utcnow
from tests.conftest import PUBLIC_BASE, oauth_connect

CALLBACK = "/manage/integrations/klaviyo/callback"
ORG_NAME = "Sandbox Festival Co."



@pytest.fixture
def sandbox_config(sandbox):
    """Change the sandbox's run-time settings for one test; its start-up settings come back afterwards."""
    def change(**settings):
        requests.post(f"{sandbox.url}/_sandbox/config", json=settings, timeout=5).raise_for_status()

    yield change
    requests.post(f"{sandbox.url}/_sandbox/reset", json={"restore_config": True}, timeout=5).raise_for_status()


@pytest.fixture
def wire(monkeypatch):
    """Every HTTP request the portal makes from this process, with its answer."""
    seen = []
    real = requests.Session.send

    def send(self, prepared, **kwargs):
        response = real(self, prepared, **kwargs)
        seen.append((prepared, response))
        return response

    monkeypatch.setattr(requests.Session, "send", send)
    return seen


def start(client) -> str:
    response = client.post_form("/manage/integrations/klaviyo/connect")
    assert response.status_code == 302
    return response.headers["Location"]


def decide(sandbox, authorize_url, decision="allow") -> str:
    """The organizer on the sandbox's consent page; returns the callback path and query Klaviyo sends back."""
    back = urlsplit(sandbox.consent(authorize_url, decision=decision))
    assert back.path == CALLBACK
    return f"{back.path}?{back.query}"


def connection(app) -> KlaviyoConnection | None:
    with app.app_context():
        row = db.session.scalar(select(KlaviyoConnection))
        if row is not None:
            db.session.expunge(row)
        return row


def connections(app) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(KlaviyoConnection))


def stats(sandbox) -> dict:
    return requests.get(f"{sandbox.url}/_sandbox/stats", timeout=5).json()


def flash_errors(client) -> list[str]:
    page = client.get("/manage/integrations/").get_data(as_text=True)
    return [html.unescape(m) for m in re.findall(r'<div class="flash (?:error|warning)" role="[^"]+">([^<]*)</div>', page)]


def card(page: str) -> str:
    return re.search(r'<article class="card" id="klaviyo-card".*?</article>', page, re.S).group(0)


# --- the card ------------------------------------------------------------------------------------------------------

def test_not_connected_card(client, organizer):
    response = client.get("/manage/integrations/")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    heading = re.search(r'<h2 id="cat-marketing">([^<]+)</h2>', page)
    assert heading and heading.group(1) == "Marketing Automation"
    section = re.search(r'<section aria-labelledby="cat-marketing".*?</section>', page, re.S).group(0)
    article = card(section)  # the card sits under the Marketing Automation heading
    assert 'aria-labelledby="klaviyo-title"' in article and '<h3 id="klaviyo-title">Klaviyo</h3>' in article
    assert re.search(r'<img class="logo" src="/static/klaviyo-logo.svg" alt="Klaviyo logo"', article)
    logo = client.get("/static/klaviyo-logo.svg")
    assert logo.status_code == 200 and logo.mimetype == "image/svg+xml"
    logo.close()
    assert "Send every ticket purchase to Klaviyo as custom events" in article
    assert re.search(r'<a href="/help/klaviyo"[^>]*>Klaviyo integration guide</a>', article)
    assert "Klaviyo integration guide" in client.get("/help/klaviyo").get_data(as_text=True)
    assert re.search(r'<a href="mailto:[^"@]+@[^"]+">', article)
    assert re.search(r'<form method="post" action="/manage/integrations/klaviyo/connect">\s*'
                     r'<input type="hidden" name="csrf_token" value="[^"]+">\s*'
                     r'<button class="btn primary" type="submit">Connect</button>', article)
    assert 'aria-label="Connected"' not in article and "More actions" not in article
    assert section.count("<article") == 1  # no invented cards for other marketing tools
    assert "Verify your installation" not in page


def test_not_configured_portal_says_so(client, app, organizer):
    app.config["KLAVIYO_CLIENT_ID"] = None
    page = client.get("/manage/integrations/").get_data(as_text=True)
    assert "Klaviyo is not configured on this portal yet." in card(page)
    assert client.post_form("/manage/integrations/klaviyo/connect").status_code == 303
    assert any("Klaviyo is not configured on this portal" in m for m in flash_errors(client))


def test_authorize_redirect_carries_exactly_what_klaviyo_requires(client, organizer, sandbox):
    url = start(client)
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == f"{sandbox.url}/oauth/authorize"
    params = parse_qs(parts.query, keep_blank_values=True)
    assert all(len(values) == 1 for values in params.values())
    params = {k: v[0] for k, v in params.items()}
    assert set(params) == {"response_type", "client_id", "redirect_uri", "scope", "state", "code_challenge",
                           "code_challenge_method"}
    assert params["response_type"] == "code"
    assert params["client_id"] == "sandbox-client-id"
    assert params["redirect_uri"] == PUBLIC_BASE + CALLBACK
    assert params["scope"] == "accounts:read events:read events:write metrics:read"
    assert params["code_challenge_method"] == "S256"
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", params["code_challenge"])
    assert len(params["state"]) >= 20
    again = {k: v[0] for k, v in parse_qs(urlsplit(start(client)).query).items()}
    assert again["state"] != params["state"] and again["code_challenge"] != params["code_challenge"]


def test_connect_over_htmx_uses_hx_redirect(client, organizer, sandbox):
    response = client.post("/manage/integrations/klaviyo/connect",
                           headers={"HX-Request": "true", "X-CSRFToken": client.csrf_token()})
    assert response.status_code == 200
    assert response.headers["HX-Redirect"].startswith(f"{sandbox.url}/oauth/authorize?")


def test_code_exchange_uses_basic_auth_and_pkce(client, organizer, sandbox, wire):
    authorize_url = start(client)
    challenge = parse_qs(urlsplit(authorize_url).query)["code_challenge"][0]
    callback = decide(sandbox, authorize_url)
    code = parse_qs(urlsplit(callback).query)["code"][0]
    response = client.get(callback)
    assert response.status_code == 303 and response.headers["Location"] == "/manage/integrations/"

    [(token_request, token_response)] = [(p, r) for p, r in wire if p.url == f"{sandbox.url}/oauth/token"]
    assert token_request.method == "POST"
    expected = "Basic " + base64.b64encode(b"sandbox-client-id:sandbox-client-secret").decode()
    assert token_request.headers["Authorization"] == expected
    body = dict(parse_qsl(token_request.body if isinstance(token_request.body, str) else token_request.body.decode()))
    assert body["grant_type"] == "authorization_code"
    assert body["code"] == code
    assert body["redirect_uri"] == PUBLIC_BASE + CALLBACK
    assert "client_secret" not in body and "sandbox-client-secret" not in str(token_request.body)
    verifier = body["code_verifier"]
    assert re.fullmatch(r"[A-Za-z0-9._~-]{43,128}", verifier)
    digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    assert digest == challenge
    assert token_response.status_code == 200
    assert stats(sandbox)["token_grants"] == 1

    [(accounts, _)] = [(p, r) for p, r in wire if p.url.startswith(f"{sandbox.url}/api/accounts")]
    assert accounts.headers["Authorization"] == "Bearer " + token_response.json()["access_token"]
    assert accounts.headers["revision"] == "2026-07-15"


def test_connected_card(client, app, connected):
    page = client.get("/manage/integrations/").get_data(as_text=True)
    # The flash after coming back, with one full stop after "Sandbox Festival Co."
    assert ORG_NAME.endswith(".") and f"Connected to your Klaviyo account {ORG_NAME}<" in page
    assert ".." not in re.sub(r"<[^>]+>", "", page).replace("...", "")
    article = card(page)
    assert re.search(r'<span class="check" role="img" aria-label="Connected">✓</span>', article)
    assert f"<strong>{ORG_NAME}</strong>" in article
    button = re.search(r'<button[^>]*id="klaviyo-more"[^>]*>⋯</button>', article)
    assert button and re.search(r'aria-label="[^"]*More actions[^"]*"', button.group(0))
    assert 'aria-haspopup="menu"' in button.group(0) and 'popovertarget="klaviyo-menu"' in button.group(0)
    menu = re.search(r'<div id="klaviyo-menu".*?</div>', article, re.S).group(0)
    items = re.findall(r'<a role="menuitem"[^>]*href="([^"]+)"[^>]*>([^<]+)</a>', menu)
    assert items == [("/manage/integrations/klaviyo", "View Details"),
                     ("/manage/integrations/klaviyo/disconnect", "Disconnect")]
    assert ">Connect</button>" not in article
    assert "Verify your installation" in page
    conn = connection(app)
    assert conn.status == "connected" and conn.organization_name == ORG_NAME
    assert conn.organizer_id == connected


def test_one_connection_per_organizer(client, app, connected, sandbox):
    first = connection(app)
    assert oauth_connect(client, sandbox.url).status_code == 303
    assert connections(app) == 1
    again = connection(app)
    assert again.id == first.id and again.access_token_enc != first.access_token_enc


def test_tokens_are_encrypted_at_rest_and_never_in_the_session_or_pages(client, app, organizer, sandbox, wire):
    assert oauth_connect(client, sandbox.url).status_code == 303
    [token] = [r.json() for p, r in wire if p.url == f"{sandbox.url}/oauth/token"]
    access, refresh = token["access_token"], token["refresh_token"]
    with app.app_context():
        raw = db.session.execute(text("SELECT access_token_enc, refresh_token_enc, scope FROM klaviyo_connections")).one()
        assert access not in raw[0] and refresh not in raw[1]
        assert access[4:40] not in raw[0] and refresh[4:30] not in raw[1]
        assert decrypt(raw[0]) == access and decrypt(raw[1]) == refresh
        assert raw[2] == "accounts:read events:read events:write metrics:read"
    cookie = client.get_cookie("session")
    session = app.session_interface.get_signing_serializer(app).loads(cookie.value)
    dumped = repr(session)
    assert access not in dumped and refresh not in dumped and "kat_" not in dumped and "krt_" not in dumped
    for url in ("/manage/integrations/", "/manage/integrations/klaviyo", "/manage/integrations/klaviyo/disconnect"):
        page = client.get(url).get_data(as_text=True)
        assert access not in page and refresh not in page and "kat_" not in page


# --- View Details ------------------------------------------------------------------------------------------------------

def facts(page: str) -> dict[str, str]:
    pairs = re.findall(r"<dt>([^<]+)</dt><dd[^>]*>(.*?)</dd>", page, re.S)
    return {k: html.unescape(re.sub(r"<[^>]+>", "", v)).strip() for k, v in pairs}


def queue_counts(page: str) -> dict[str, int]:
    return {label: int(n) for n, label in re.findall(
        r"<b>(\d+)</b><span>(accepted by Klaviyo|on the way|held until you reconnect|failed)</span>", page)}


@pytest.mark.parametrize("htmx", [False, True])
def test_view_details(client, app, connected, htmx):
    response = client.get("/manage/integrations/klaviyo", headers={"HX-Request": "true"} if htmx else {})
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert ("<html" in page) is not htmx
    assert "Klaviyo connection details" in page
    shown = facts(page)
    conn = connection(app)
    assert shown["Klaviyo account"] == ORG_NAME
    assert shown["Account ID"] == "SBX01HXYZ"  # behind Details, with the other technical facts
    assert shown["Public API key (site ID)"] == "SbX123"
    assert shown["Time zone"] == "America/New_York"
    assert shown["Currency"] == "USD"
    assert shown["Status"] == "Connected"
    assert shown["Connected by"] == "Ada Events <ada@organizer.example>"
    assert shown["Connected"] == conn.connected_at.strftime("%-d %b %Y, %H:%M UTC")
    assert shown["Permissions (scopes)"] == "accounts:read, events:read, events:write, metrics:read"
    assert shown["Last event accepted"] == "Nothing sent yet"
    assert re.search(r'<details class="tech" id="tech-connection">.*Account ID.*SBX01HXYZ.*</details>', page, re.S)
    assert queue_counts(page) == {"accepted by Klaviyo": 0, "on the way": 0, "held until you reconnect": 0,
                                  "failed": 0}
    assert "Nothing sent yet: the next purchase goes to Klaviyo as it happens." in page
    assert "Refresh account details" in page


def test_view_details_queue_counts_are_real(client, app, connected, make_event):
    event_id = make_event(connected)
    with app.app_context():
        event = db.session.get(Event, event_id)
        public_id, type_id = event.public_id, event.ticket_types[0].id
    response = client.post_form(f"/e/{public_id}/checkout", {
        f"qty-{type_id}": "2", "first_name": "Pat", "last_name": "Buyer", "email": "pat@buyer.example",
        "attendee-0-same": "1", "attendee-1-first_name": "Sam", "attendee-1-last_name": "Guest",
        "attendee-1-email": "sam@guest.example"})
    assert response.status_code == 303
    with app.app_context():
        db.session.execute(text("UPDATE outbox_events SET status = 'failed', last_error = 'boom' WHERE metric = "
                                "'Registered Attendee'"))
        db.session.commit()
    body = client.get("/manage/integrations/klaviyo/queue", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert "<html" not in body and 'id="klaviyo-queue"' in body
    assert queue_counts(body) == {"accepted by Klaviyo": 0, "on the way": 3, "held until you reconnect": 0,
                                  "failed": 1}  # Placed Order + 2 Ordered Experience
    assert "Registered Attendee: boom" in body
    assert "1 event failed: open its order to see why, then retry." in body  # the queue's plain line


def test_view_details_when_not_connected_goes_back_to_the_card(client, organizer):
    response = client.get("/manage/integrations/klaviyo")
    assert response.status_code == 303 and response.headers["Location"] == "/manage/integrations/"
    assert client.get("/manage/integrations/klaviyo/disconnect").status_code == 303
    assert client.post_form("/manage/integrations/klaviyo/disconnect").status_code == 404
    assert client.post_form("/manage/integrations/klaviyo/account/refresh").status_code == 404


def test_refresh_account_details_respects_one_lookup_per_second(client, app, connected, sandbox):
    time.sleep(1.05)  # the connect itself looked the account up a moment ago
    with app.app_context():
        db.session.execute(text("UPDATE klaviyo_connections SET organization_name = 'Stale'"))
        db.session.commit()
    before = stats(sandbox)["requests"]["by_path"].get("/api/accounts", {})
    response = client.post_form("/manage/integrations/klaviyo/account/refresh")
    assert response.status_code == 303 and response.headers["Location"] == "/manage/integrations/klaviyo"
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "Account details refreshed from Klaviyo." in page
    assert connection(app).organization_name == ORG_NAME
    response = client.post_form("/manage/integrations/klaviyo/account/refresh")
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "Klaviyo allows one account lookup per second and 15 a minute. Try again in 1 s." in page
    after = stats(sandbox)
    assert sum(after["requests"]["by_path"]["/api/accounts"].values()) == sum(before.values()) + 1
    assert after["throttled_429"] == 0


def test_refresh_right_after_connecting_does_not_hit_klaviyos_limit(client, app, organizer, sandbox):
    time.sleep(1.02 - time.time() % 1)  # start a fresh second: Klaviyo's 1 s windows are aligned to the clock
    assert oauth_connect(client, sandbox.url).status_code == 303
    client.post_form("/manage/integrations/klaviyo/account/refresh")
    throttled = stats(sandbox)["throttled_429"]
    log = requests.get(f"{sandbox.url}/_sandbox/requests", params={"path_prefix": "/api/accounts"}, timeout=5).json()
    if throttled == 0 and len({int(r["ts"]) for r in log["requests"]}) > 1:
        pytest.skip("the machine was too slow to land both lookups in the same second")
    assert throttled == 0


def test_refresh_account_when_the_token_endpoint_fails(client, app, connected, sandbox):
    with app.app_context():
        db.session.execute(text("UPDATE klaviyo_connections SET expires_at = :past"),
                           {"past": utcnow() - timedelta(minutes=5)})
        db.session.commit()
    sandbox.add_faults({"status": 500, "count": 1, "paths": ["/oauth/token"]})
    time.sleep(1.1)  # the connect itself just looked the account up; Klaviyo allows one lookup a second
    response = client.post_form("/manage/integrations/klaviyo/account/refresh")
    assert response.status_code == 303
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "Klaviyo could not be reached. Try again in a minute." in page
    assert connection(app).status == "connected"


# --- callback errors: a clear message and nothing stored ------------------------------------------------------------

def assert_nothing_stored(app, sandbox):
    assert connections(app) == 0
    assert stats(sandbox)["installations"] == [] or all(
        i.get("status") != "active" for i in stats(sandbox)["installations"])


def test_cancel_in_klaviyo(client, app, organizer, sandbox):
    response = oauth_connect(client, sandbox.url, decision="deny")
    assert response.status_code == 303 and response.headers["Location"] == "/manage/integrations/"
    errors = flash_errors(client)
    assert any(m.startswith("You cancelled in Klaviyo") for m in errors), errors
    assert connections(app) == 0 and stats(sandbox)["token_grants"] == 0


@pytest.mark.parametrize("query, message", [
    ("", "This Klaviyo sign-in was not started from this page"),
    ("code=abc", "This Klaviyo sign-in was not started from this page"),
    ("code=abc&state=forged", "This Klaviyo sign-in was not started from this page"),
    ("state=forged", "This Klaviyo sign-in was not started from this page"),
    ("error=", "This Klaviyo sign-in was not started from this page"),
    ("error=access_denied", "This Klaviyo sign-in was not started from this page"),  # not a state it started
    ("error=server_error&error_description=%3Cscript%3Ealert(1)%3C%2Fscript%3E",
     "This Klaviyo sign-in was not started from this page"),
    ("code=%00%01%02&state=%ff%fe", "This Klaviyo sign-in was not started from this page"),
    ("code=a&code=b&state=x&state=y", "This Klaviyo sign-in was not started from this page"),
    ("state=" + "A" * 4000 + "&code=" + "B" * 4000, "This Klaviyo sign-in was not started from this page"),
    ("code[]=1&state[$ne]=1", "This Klaviyo sign-in was not started from this page"),
])
def test_callback_garbage_without_a_started_sign_in(client, app, organizer, sandbox, query, message):
    start(client)  # a sign-in is under way, but these answers don't belong to it
    response = client.get(f"{CALLBACK}?{query}")
    assert response.status_code == 303 and response.headers["Location"] == "/manage/integrations/"
    page = client.get("/manage/integrations/").get_data(as_text=True)
    assert "<script>alert(1)" not in page
    errors = flash_errors_from(page)
    assert any(m.startswith(message) for m in errors), errors
    assert connections(app) == 0 and stats(sandbox)["token_grants"] == 0


@pytest.mark.parametrize("error, message", [
    ("access_denied", "You cancelled in Klaviyo"),
    ("server_error&error_description=Call+0800+SCAM+to+fix+this", "Klaviyo could not complete the connection."),
])
def test_an_error_for_a_sign_in_it_started_is_told_in_our_words(client, app, organizer, sandbox, error, message):
    state = parse_qs(urlsplit(start(client)).query)["state"][0]
    assert client.get(f"{CALLBACK}?state={state}&error={error}").status_code == 303
    page = client.get("/manage/integrations/").get_data(as_text=True)
    errors = flash_errors_from(page)
    assert any(m.startswith(message) for m in errors), errors
    assert "SCAM" not in page  # the callback's own wording never reaches the organizer
    assert connections(app) == 0


def test_a_replayed_callback_changes_nothing_and_says_so(client, app, organizer, sandbox):
    callback = decide(sandbox, start(client))
    assert client.get(callback).status_code == 303
    first = connection(app)
    assert first.status == "connected"
    assert client.get(callback).status_code == 303  # the same callback again, same cookie
    page = client.get("/manage/integrations/").get_data(as_text=True)
    assert "This Klaviyo sign-in was already completed, so nothing changed." in page
    again = connection(app)
    assert (again.status, again.access_token_enc, again.refresh_token_enc) == (
        "connected", first.access_token_enc, first.refresh_token_enc)
    figures = stats(sandbox)
    assert figures["token_grants"] == 1, figures  # the code was exchanged once: the grant is still valid
    assert figures["revokes"] == [], figures


def flash_errors_from(page: str) -> list[str]:
    return [html.unescape(m) for m in re.findall(r'<div class="flash (?:error|warning)" role="[^"]+">([^<]*)</div>', page)]


@pytest.mark.parametrize("extra, message", [
    ("code=not-a-real-code", "Klaviyo did not accept the sign-in code"),
    ("code=", "Klaviyo could not complete the connection"),
    pytest.param("", "Klaviyo could not complete the connection"),
])
def test_callback_with_the_right_state_but_a_bad_code(client, app, organizer, sandbox, extra, message):
    state = parse_qs(urlsplit(start(client)).query)["state"][0]
    response = client.get(f"{CALLBACK}?state={state}" + (f"&{extra}" if extra else ""))
    assert response.status_code == 303
    errors = flash_errors(client)
    assert any(m.startswith(message) for m in errors), errors
    assert connections(app) == 0


def test_callback_with_a_mismatched_state(client, app, organizer, sandbox):
    callback = decide(sandbox, start(client))
    tampered = re.sub(r"state=[^&]+", "state=someone-elses-state", callback)
    assert client.get(tampered).status_code == 303
    errors = flash_errors(client)
    assert any(m.startswith("This Klaviyo sign-in was not started from this page") for m in errors), errors
    assert connections(app) == 0 and stats(sandbox)["token_grants"] == 0


def test_callback_from_another_browser_is_refused(app, client, organizer, sandbox, login):
    """The sign-in's state lives in the browser that started it: a callback URL replayed elsewhere fails."""
    callback = decide(sandbox, start(client))
    other = app.test_client()
    login(who=other)
    assert other.get(callback).status_code == 303
    assert connections(app) == 0 and stats(sandbox)["token_grants"] == 0


def test_a_replayed_code_is_refused(client, app, organizer, sandbox):
    first_callback = decide(sandbox, start(client))
    assert client.get(first_callback).status_code == 303
    stored = connection(app)
    old_code = parse_qs(urlsplit(first_callback).query)["code"][0]
    fresh_state = parse_qs(urlsplit(start(client)).query)["state"][0]
    response = client.get(f"{CALLBACK}?code={old_code}&state={fresh_state}")
    assert response.status_code == 303
    errors = flash_errors(client)
    assert any(m.startswith("Klaviyo did not accept the sign-in code: it was already used or has expired.")
               for m in errors), errors
    again = connection(app)
    assert connections(app) == 1
    assert (again.access_token_enc, again.refresh_token_enc, again.connected_at) == (
        stored.access_token_enc, stored.refresh_token_enc, stored.connected_at)


def test_the_same_callback_twice_is_refused(client, app, organizer, sandbox):
    callback = decide(sandbox, start(client))
    assert client.get(callback).status_code == 303
    stored = connection(app)
    assert client.get(callback).status_code == 303  # the state was used up by the first visit
    assert "This Klaviyo sign-in was already completed" in client.get("/manage/integrations/").get_data(as_text=True)
    assert connection(app).access_token_enc == stored.access_token_enc


def test_an_expired_code_is_refused(client, app, organizer, sandbox, sandbox_config):
    sandbox_config(code_lifetime=0)
    callback = decide(sandbox, start(client))
    time.sleep(0.05)
    assert client.get(callback).status_code == 303
    errors = flash_errors(client)
    assert any(m.startswith("Klaviyo did not accept the sign-in code: it was already used or has expired.")
               for m in errors), errors
    assert connections(app) == 0 and stats(sandbox)["token_grants"] == 0


def test_wrong_client_secret_is_explained(client, app, organizer, sandbox, sandbox_config):
    sandbox_config(client_secret="rotated-in-klaviyo")
    callback = decide(sandbox, start(client))
    assert client.get(callback).status_code == 303
    errors = flash_errors(client)
    assert any(m.startswith("Klaviyo did not recognise this portal's app credentials") for m in errors), errors
    assert connections(app) == 0


@pytest.mark.parametrize("fault, message", [
    ("drop", "Klaviyo could not be reached to finish connecting."),
    pytest.param(500, "Klaviyo could not"),
    pytest.param(503, "Klaviyo could not"),
    pytest.param(429, "Klaviyo could not"),
])
def test_token_endpoint_failure(client, app, organizer, sandbox, fault, message):
    callback = decide(sandbox, start(client))
    sandbox.add_faults({"status": fault, "count": 1, "paths": ["/oauth/token"], **(
        {"retry_after": 1} if fault == 429 else {})})
    response = client.get(callback)
    assert response.status_code == 303 and response.headers["Location"] == "/manage/integrations/"
    errors = flash_errors(client)
    assert any(m.startswith(message) for m in errors), errors
    assert not any("events:write" in m for m in errors)
    assert connections(app) == 0


# --- Needs reconnect and Reconnect -------------------------------------------------------------------------------------

def test_reconnect_after_klaviyo_revoked_the_app(client, app, connected, sandbox, make_event):
    from portal.sync import connection as service
    from portal.klaviyo.client import TokenRejected

    event_id = make_event(connected)
    with app.app_context():
        event = db.session.get(Event, event_id)
        public_id, type_id = event.public_id, event.ticket_types[0].id
    buy = {f"qty-{type_id}": "1", "first_name": "Pat", "last_name": "Buyer", "email": "pat@buyer.example",
           "attendee-0-same": "1"}
    assert client.post_form(f"/e/{public_id}/checkout", buy).status_code == 303

    sandbox.uninstall()  # the organizer removes the app inside Klaviyo
    with app.app_context():
        conn = service.connection_for(connected)
        with pytest.raises(TokenRejected):
            service.refresh(conn, stale=decrypt(conn.access_token_enc))
    conn = connection(app)
    assert conn.status == "needs_reconnect"
    assert "uninstalled" in conn.status_reason
    with app.app_context():
        rows = list(db.session.scalars(select(OutboxEvent)))
        assert {r.status for r in rows} == {"held"} and len(rows) == 2
        created = {r.id: r.created_at for r in rows}

    page = client.get("/manage/integrations/").get_data(as_text=True)
    article = card(page)
    assert "Needs reconnect" in article and 'aria-label="Connected"' not in article
    assert "the app was uninstalled or access was revoked in Klaviyo" in article
    assert re.search(r'<form method="post" action="/manage/integrations/klaviyo/connect"[^>]*>\s*'
                     r'<input type="hidden" name="csrf_token" value="[^"]+">\s*'
                     r'<button class="btn warn" type="submit">Reconnect</button>', article)
    assert facts(client.get("/manage/integrations/klaviyo").get_data(as_text=True))["Status"] == "Needs reconnect"
    # A purchase while the connection needs reconnecting is kept, held.
    assert client.post_form(f"/e/{public_id}/checkout", buy).status_code == 303
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(OutboxEvent).where(OutboxEvent.status == "held")) == 4

    assert oauth_connect(client, sandbox.url).status_code == 303
    conn = connection(app)
    assert conn.status == "connected" and conn.status_reason is None and connections(app) == 1
    with app.app_context():
        rows = list(db.session.scalars(select(OutboxEvent)))
        assert {r.status for r in rows} == {"pending"}
        assert all(created[r.id] == r.created_at for r in rows if r.id in created)
    assert 'aria-label="Connected"' in card(client.get("/manage/integrations/").get_data(as_text=True))


# --- Disconnect --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("htmx", [False, True])
def test_disconnect_asks_for_confirmation(client, app, connected, htmx):
    response = client.get("/manage/integrations/klaviyo/disconnect", headers={"HX-Request": "true"} if htmx else {})
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert ("<html" in page) is not htmx
    assert "Nothing more will be sent to Klaviyo; what Klaviyo already has stays there" in page
    assert re.search(r'<form method="post" action="/manage/integrations/klaviyo/disconnect"', page)
    assert connection(app).status == "connected"  # asking changes nothing


def test_disconnect_revokes_deletes_tokens_and_shows_connect(client, app, connected, sandbox, make_event, wire):
    event_id = make_event(connected)
    with app.app_context():
        event = db.session.get(Event, event_id)
        public_id, type_id = event.public_id, event.ticket_types[0].id
    assert client.post_form(f"/e/{public_id}/checkout", {
        f"qty-{type_id}": "1", "first_name": "Pat", "last_name": "Buyer", "email": "pat@buyer.example",
        "attendee-0-same": "1"}).status_code == 303
    before = connection(app)
    with app.app_context():
        access, refresh = decrypt(before.access_token_enc), decrypt(before.refresh_token_enc)

    response = client.post_form("/manage/integrations/klaviyo/disconnect")
    assert response.status_code == 303 and response.headers["Location"] == "/manage/integrations/"
    [revoke] = [p for p, _ in wire if p.url == f"{sandbox.url}/oauth/revoke"]
    assert revoke.headers["Authorization"].startswith("Basic ")
    body = dict(parse_qsl(revoke.body if isinstance(revoke.body, str) else revoke.body.decode()))
    assert body == {"token": refresh, "token_type_hint": "refresh_token"}
    revokes = stats(sandbox)["revokes"]
    assert len(revokes) == 1 and revokes[0]["via"] == "oauth_revoke" and revokes[0]["token_type_hint"] == "refresh_token"
    answer = requests.get(f"{sandbox.url}/api/accounts", timeout=5, headers={
        "Authorization": f"Bearer {access}", "revision": "2026-07-15", "Accept": "application/vnd.api+json"})
    assert answer.status_code == 401  # Klaviyo no longer accepts the old token

    after = connection(app)
    assert after.status == "disconnected" and after.disconnected_at is not None
    assert (after.access_token_enc, after.refresh_token_enc, after.revoke_pending_enc) == (None, None, None)
    with app.app_context():
        statuses = {(r.status, r.status_detail) for r in db.session.scalars(select(OutboxEvent))}
    assert statuses == {("cancelled", "cancelled: disconnected")}

    page = client.get("/manage/integrations/").get_data(as_text=True)
    assert "Disconnected from Klaviyo. Nothing more will be sent; what Klaviyo already has stays there." in page
    article = card(page)
    assert ">Connect</button>" in article and 'aria-label="Connected"' not in article and "More actions" not in article
    assert "Verify your installation" not in page
    # The order's timeline says so too.
    with app.app_context():
        order_id = db.session.scalar(select(Order.id))
    page = client.get(f"/manage/orders/{order_id}").get_data(as_text=True)
    assert '<span class="badge">Not sent</span>' in page
    assert "Not sent: Klaviyo was disconnected before it went." in page


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # nothing listens there any more


@pytest.mark.parametrize("outage", ["drop", 503, "closed port"])
def test_disconnect_while_klaviyo_is_unreachable_still_disconnects(client, app, connected, sandbox, outage):
    from portal.sync import jobs

    with app.app_context():
        refresh = decrypt(connection(app).refresh_token_enc)
    if outage == "closed port":
        app.config["KLAVIYO_API_BASE"] = closed_port_url()
    else:
        sandbox.add_faults({"status": outage, "paths": ["/oauth/revoke"]})
    response = client.post_form("/manage/integrations/klaviyo/disconnect")
    assert response.status_code == 303
    page = client.get("/manage/integrations/").get_data(as_text=True)
    assert "Klaviyo could not be reached to revoke access; the portal will keep trying in the background." in page
    assert ">Connect</button>" in card(page)
    conn = connection(app)
    assert conn.status == "disconnected" and conn.access_token_enc is None and conn.refresh_token_enc is None
    assert conn.revoke_pending_enc is not None and refresh not in conn.revoke_pending_enc
    with app.app_context():
        assert decrypt(conn.revoke_pending_enc) == refresh
    assert stats(sandbox)["revokes"] == []

    with app.app_context():
        jobs.sweep()  # still unreachable: kept for later
    assert connection(app).revoke_pending_enc is not None

    app.config["KLAVIYO_API_BASE"] = sandbox.url
    sandbox.clear_faults()
    with app.app_context():
        jobs.sweep()
    assert connection(app).revoke_pending_enc is None
    revokes = stats(sandbox)["revokes"]
    assert len(revokes) == 1 and revokes[0]["via"] == "oauth_revoke"


# --- the checklist -------------------------------------------------------------------------------------------------------

def steps(page: str) -> list[bool]:
    block = re.search(r'<ol class="steps">(.*?)</ol>', page, re.S).group(1)
    return ['aria-label="Done"' in item for item in re.findall(r"<li.*?</li>", block, re.S)]


def test_verify_installation_checklist_ticks_itself(client, app, connected, make_event):
    from portal.sync import jobs

    page = client.get("/manage/integrations/").get_data(as_text=True)
    assert steps(page) == [False, False, False, False]
    event_id = make_event(connected, status="live")
    assert steps(client.get("/manage/integrations/klaviyo/checklist").get_data(as_text=True)) == [True, False, False,
                                                                                                   False]
    client.get(f"/manage/events/{event_id}/widget")
    assert steps(client.get("/manage/integrations/klaviyo/checklist").get_data(as_text=True))[1] is False  # GET writes nothing
    assert client.post_form(f"/manage/events/{event_id}/previewed").status_code == 204  # the page's beacon
    with app.app_context():
        event = db.session.get(Event, event_id)
        public_id, type_id = event.public_id, event.ticket_types[0].id
    assert client.post_form(f"/w/{public_id}/checkout?preview=1", {
        f"qty-{type_id}": "1", "first_name": "Pat", "last_name": "Buyer", "email": "pat@buyer.example",
        "attendee-0-same": "1"}).status_code == 303
    fragment = client.get("/manage/integrations/klaviyo/checklist", headers={"HX-Request": "true"})
    body = fragment.get_data(as_text=True)
    assert "<html" not in body and steps(body) == [True, True, True, False]
    assert 'hx-trigger="every 3s"' in body
    with app.app_context():
        assert jobs.deliver(connected) == 2  # the worker's job, run here against the sandbox
    body = client.get("/manage/integrations/klaviyo/checklist").get_data(as_text=True)
    # Accepted (202) is not enough: step 4 waits until the events are read back from Klaviyo.
    assert steps(body) == [True, True, True, False] and "Checking Klaviyo: 0 of 2 events stored" in body
    assert 'hx-trigger="every 3s"' in body
    with app.app_context():
        from portal.sync import verify

        verify.run(connected)  # the read-back job (Get Events), run here against the sandbox
    body = client.get("/manage/integrations/klaviyo/checklist").get_data(as_text=True)
    assert steps(body) == [True, True, True, True]
    assert "4 of 4 done: your installation works." in body and "hx-trigger" not in body
    shown = facts(client.get("/manage/integrations/klaviyo").get_data(as_text=True))
    assert shown["Last event accepted"] != "Nothing sent yet"


# --- fragments that poll themselves: only while something is on its way ------------------------------------------------

QUEUE = "/manage/integrations/klaviyo/queue"
HTMX = {"HX-Request": "true"}


def buy_one(client, app, event_id, preview=False):
    with app.app_context():
        event = db.session.get(Event, event_id)
        public_id, type_id = event.public_id, event.ticket_types[0].id
    response = client.post_form(f"/e/{public_id}/checkout{'?preview=1' if preview else ''}", {
        f"qty-{type_id}": "1", "first_name": "Pat", "last_name": "Buyer", "email": "pat@buyer.example",
        "attendee-0-same": "1"})
    assert response.status_code == 303


def test_view_details_queue_polls_only_while_events_are_pending(client, app, connected, make_event):
    from portal.sync import jobs

    idle = client.get(QUEUE, headers=HTMX).get_data(as_text=True)
    assert 'id="klaviyo-queue"' in idle and "every 2s" not in idle
    buy_one(client, app, make_event(connected))
    busy = client.get(QUEUE, headers=HTMX).get_data(as_text=True)
    assert "<b>2</b><span>on the way</span>" in busy
    assert re.search(rf'<div id="klaviyo-queue" hx-get="{QUEUE}" hx-swap="outerHTML"\s+hx-trigger="every 2s">', busy)
    assert 'hx-trigger="every 2s"' in client.get("/manage/integrations/klaviyo", headers=HTMX).get_data(as_text=True)
    with app.app_context():
        assert jobs.deliver(connected) == 2
    sent = client.get(QUEUE, headers=HTMX).get_data(as_text=True)
    assert "<b>2</b><span>accepted by Klaviyo</span>" in sent and "<b>0</b><span>on the way</span>" in sent
    assert "every 2s" not in sent
    assert 'hx-trigger="every 2s"' not in client.get("/manage/integrations/klaviyo").get_data(as_text=True)
    # Still a way to look again: Refresh asks for the fragment (a plain link to View Details without JavaScript).
    refresh = re.search(r"<a [^>]*>Refresh</a>", sent).group(0)
    assert f'hx-get="{QUEUE}"' in refresh and 'href="/manage/integrations/klaviyo"' in refresh


def test_view_details_polls_while_a_backfill_runs(client, app, connected):
    from portal.sync.models import BackfillRun

    with app.app_context():
        run = BackfillRun(organizer_id=connected, status="running", total_orders=10, events_planned=30)
        db.session.add(run)
        db.session.commit()
        run_id = run.id
    queue = client.get(QUEUE, headers=HTMX).get_data(as_text=True)
    assert "<b>0</b><span>on the way</span>" in queue and 'hx-trigger="every 2s"' in queue
    progress = client.get("/manage/integrations/klaviyo/backfill/progress", headers=HTMX).get_data(as_text=True)
    assert 'hx-trigger="load delay:1s"' in progress
    with app.app_context():
        db.session.get(BackfillRun, run_id).status = "cancelled"
        db.session.commit()
    assert "every 2s" not in client.get(QUEUE, headers=HTMX).get_data(as_text=True)
    progress = client.get("/manage/integrations/klaviyo/backfill/progress", headers=HTMX).get_data(as_text=True)
    assert "Resume" in progress and "hx-trigger" not in progress


def test_checklist_polls_only_while_the_test_order_is_sending(client, app, connected, make_event):
    from portal.sync import jobs

    event_id = make_event(connected, status="live")
    waiting = client.get("/manage/integrations/klaviyo/checklist", headers=HTMX).get_data(as_text=True)
    assert steps(waiting) == [True, False, False, False]
    # Nothing is on its way: the next steps are the organizer's to take, so no polling; the checklist looks
    # again when its tab is shown.
    assert "every 3s" not in waiting
    assert "hx-trigger=\"visibilitychange[document.visibilityState=='visible'] from:document\"" in html.unescape(waiting)
    buy_one(client, app, event_id, preview=True)
    sending = client.get("/manage/integrations/klaviyo/checklist", headers=HTMX).get_data(as_text=True)
    assert steps(sending)[2:] == [True, False] and 'hx-trigger="every 3s"' in sending
    with app.app_context():
        assert jobs.deliver(connected) == 2
    accepted = client.get("/manage/integrations/klaviyo/checklist", headers=HTMX).get_data(as_text=True)
    assert steps(accepted)[2:] == [True, False] and 'hx-trigger="every 3s"' in accepted  # being read back
    with app.app_context():
        from portal.sync import verify

        verify.run(connected)
    sent = client.get("/manage/integrations/klaviyo/checklist", headers=HTMX).get_data(as_text=True)
    assert steps(sent)[2:] == [True, True] and "every 3s" not in sent
