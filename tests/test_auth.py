"""Organizer accounts and the portal shell: sign up, log in/out, throttling, safe redirects, the login gate
for every non-public route (htmx included), and the top navigation."""
import re
from datetime import timedelta
from urllib.parse import urljoin, urlsplit

import pytest
from sqlalchemy import func, select

from portal.auth.models import LoginThrottle, Organizer
from portal.extensions import db

PASSWORD = "correct horse battery"
EMAIL = "ada@organizer.example"

# Endpoints anyone may reach without logging in.
PUBLIC_ENDPOINTS = {
    "static", "core.index", "core.healthz", "core.klaviyo_help", "core.channels_help", "auth.signup", "auth.login",
    "storefront.event_page", "storefront.widget", "storefront.attendees", "storefront.summary", "storefront.checkout",
    "storefront.confirmation", "storefront.sync_panel", "storefront.checkout_started",
}



def _rules():
    """Every (rule, method) of the real app's URL map, read once at collection time."""
    from portal import create_app

    app = create_app({"SQLALCHEMY_DATABASE_URI": "sqlite://", "SECRET_KEY": "collect", "TESTING": True,
                      "TOKEN_ENCRYPTION_KEY": "x" * 43 + "=", "KLAVIYO_CLIENT_ID": "c", "KLAVIYO_CLIENT_SECRET": "s"})
    out = []
    for rule in app.url_map.iter_rules():
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            out.append((rule.rule, rule.endpoint, method))
    return sorted(out)


RULES = _rules()
# Store webhooks are public too: server to server, authenticated by the store's signature.
PUBLIC_PREFIXES = ("webhooks.",)
PROTECTED = [(rule, method) for rule, endpoint, method in RULES
             if endpoint not in PUBLIC_ENDPOINTS and not endpoint.startswith(PUBLIC_PREFIXES)]


def fill(rule: str) -> str:
    """A concrete URL for a rule (ids need not exist: the login gate answers before any lookup)."""
    url = re.sub(r"<int:[a-z_]+>", "1", rule)
    url = re.sub(r"<any\(([^,)]+)[^)]*\):[a-z_]+>", lambda m: m.group(1).strip(" '\""), url)  # its first choice
    return re.sub(r"<[^>]+>", "x", url)


def signup(client, **fields):
    data = {"name": "Ada Events", "email": EMAIL, "password": PASSWORD}
    data.update(fields)
    return client.post_form("/auth/signup", data)


def count_organizers(app) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(Organizer))


def logged_in(client) -> bool:
    response = client.get("/manage/events/")
    return response.status_code == 200


# --- sign up -----------------------------------------------------------------------------------------------

def test_signup_page_renders_the_form(client):
    response = client.get("/auth/signup")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    for name in ("name", "email", "password", "csrf_token"):
        assert f'name="{name}"' in page


def test_signup_creates_account_logs_in_and_hashes_password(client, app, monkeypatch):
    monkeypatch.undo()  # the real password hashing
    response = signup(client, email="New.Person@Example.org")
    assert response.status_code == 303
    assert response.headers["Location"].endswith("/manage/events/")
    with app.app_context():
        organizer = db.session.scalar(select(Organizer))
        assert organizer.email == "new.person@example.org"
        assert organizer.name == "Ada Events"
        assert PASSWORD not in organizer.password_hash
        assert organizer.password_hash.startswith("scrypt:")
        assert organizer.check_password(PASSWORD) and not organizer.check_password(PASSWORD + "x")
    assert logged_in(client)


@pytest.mark.parametrize("fields, field, message", [
    ({"email": "not-an-email"}, "email", "Invalid email address"),
    ({"email": "a@"}, "email", "Invalid email address"),
    ({"email": ""}, "email", "This field is required"),
    ({"password": "short"}, "password", "Use at least 10 characters."),
    ({"password": "123456789"}, "password", "Use at least 10 characters."),
    ({"name": ""}, "name", "This field is required"),
    ({"name": "x" * 121}, "name", "Field cannot be longer than 120 characters"),
    pytest.param({"name": "    "}, "name", "This field is required"),
])
def test_signup_validation_shows_message_next_to_field_and_stores_nothing(client, app, fields, field, message):
    response = signup(client, **fields)
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    match = re.search(rf'<div class="error-text" id="{field}-error">([^<]*)</div>', page)
    assert match, f"no error next to {field}"
    assert message in match.group(1)
    assert count_organizers(app) == 0
    assert not logged_in(client)


@pytest.mark.parametrize("email", [EMAIL, EMAIL.upper(), "Ada@Organizer.Example"])
def test_signup_with_an_existing_email_is_refused(client, app, make_organizer, email):
    make_organizer()
    response = signup(client, email=email, name="Impostor")
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert re.search(r'id="email-error">An account with this e-mail exists already', page)
    assert count_organizers(app) == 1
    with app.app_context():
        assert db.session.scalar(select(Organizer.name)) == "Ada Events"


def test_signup_keeps_what_was_typed(client):
    page = signup(client, name="Festival GmbH", password="short").get_data(as_text=True)
    assert 'value="Festival GmbH"' in page
    assert f'value="{EMAIL}"' in page
    assert "short" not in re.findall(r'<input[^>]*name="password"[^>]*>', page)[0]  # never echo a password


# --- log in / log out --------------------------------------------------------------------------------------

def test_login_page(client):
    response = client.get("/auth/login")
    assert response.status_code == 200
    assert 'name="csrf_token"' in response.get_data(as_text=True)


def test_login_and_logout(client, make_organizer):
    make_organizer()
    assert not logged_in(client)
    response = client.post_form("/auth/login", {"email": EMAIL.upper(), "password": PASSWORD})
    assert response.status_code == 303
    assert response.headers["Location"] == "/manage/integrations/"
    assert logged_in(client)
    # The logout form is on every portal page, posting with the CSRF token.
    page = client.get("/manage/events/").get_data(as_text=True)
    assert re.search(r'<form method="post" action="/auth/logout">\s*<input type="hidden" name="csrf_token"', page)
    assert client.get("/auth/logout").status_code == 405  # a GET can't log anyone out
    assert logged_in(client)
    response = client.post_form("/auth/logout")
    assert response.status_code == 303 and response.headers["Location"] == "/auth/login"
    assert not logged_in(client)


def test_logout_without_csrf_token_is_refused(client, organizer):
    response = client.post("/auth/logout")
    assert response.status_code == 400
    assert logged_in(client)


@pytest.mark.parametrize("email, password", [
    (EMAIL, "wrong password!"),
    ("nobody@organizer.example", PASSWORD),
])
def test_login_failure(client, make_organizer, email, password):
    make_organizer()
    response = client.post_form("/auth/login", {"email": email, "password": password})
    assert response.status_code == 401
    assert "That e-mail and password do not match an account." in response.get_data(as_text=True)
    assert not logged_in(client)


def test_login_with_empty_fields_is_422(client, make_organizer):
    make_organizer()
    response = client.post_form("/auth/login", {"email": "", "password": ""})
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert 'id="email-error"' in page and 'id="password-error"' in page


def test_session_cookie_flags(client, make_organizer):
    make_organizer()
    response = client.post_form("/auth/login", {"email": EMAIL, "password": PASSWORD})
    cookies = [c for c in response.headers.getlist("Set-Cookie") if c.startswith("session=")]
    assert cookies, response.headers
    flags = [part.strip().lower() for part in cookies[-1].split(";")]
    assert "httponly" in flags
    assert "samesite=lax" in flags


def test_cookie_flag_defaults_in_config():
    from portal.config import Config

    assert Config.SESSION_COOKIE_HTTPONLY is True
    assert Config.SESSION_COOKIE_SAMESITE == "Lax"
    assert Config.REMEMBER_COOKIE_HTTPONLY is True


# --- throttling --------------------------------------------------------------------------------------------

def fail(client, n, email=EMAIL):
    for _ in range(n):
        assert client.post_form("/auth/login", {"email": email, "password": "wrong password"}).status_code == 401


def test_five_failures_lock_the_account_even_for_the_right_password(client, app, make_organizer):
    make_organizer()
    fail(client, 5)
    response = client.post_form("/auth/login", {"email": EMAIL, "password": PASSWORD})
    assert response.status_code == 429
    page = response.get_data(as_text=True)
    assert re.search(r'id="password-error">Too many failed attempts\. Wait 15 minutes', page)
    assert not logged_in(client)
    # The lock is per account and client address, not per browser: another browser there is locked out too.
    other = app.test_client()
    assert other.post_form("/auth/login", {"email": EMAIL, "password": PASSWORD}).status_code == 429


def test_a_stranger_cannot_lock_the_organizer_out(client, app, make_organizer):
    """Failures from one address do not lock the account for the organizer's own address."""
    make_organizer()
    stranger = app.test_client()
    stranger.environ_base["REMOTE_ADDR"] = "203.0.113.9"
    fail(stranger, 5)
    assert stranger.post_form("/auth/login", {"email": EMAIL, "password": PASSWORD}).status_code == 429
    assert client.post_form("/auth/login", {"email": EMAIL, "password": PASSWORD}).status_code == 303


def test_lock_expires(client, app, make_organizer, login):
    make_organizer()
    fail(client, 5)
    with app.app_context():
        throttle = db.session.scalars(select(LoginThrottle)).one()
        throttle.locked_until -= timedelta(minutes=16)
        throttle.first_failure_at -= timedelta(minutes=16)
        db.session.commit()
    login()
    assert logged_in(client)


def test_four_failures_do_not_lock(client, make_organizer, login):
    make_organizer()
    fail(client, 4)
    login()
    assert logged_in(client)


def test_a_success_before_the_lock_resets_the_count(client, app, make_organizer, login):
    make_organizer()
    fail(client, 4)
    login()
    client.post_form("/auth/logout")
    with app.app_context():
        assert db.session.scalars(select(LoginThrottle)).first() is None
    fail(client, 4)
    login()  # 8 failures in all, but never 5 in a row
    assert logged_in(client)


# --- ?next= --------------------------------------------------------------------------------------------------

def lands_on(location: str) -> str:
    """Where a browser goes for this Location: WHATWG URL parsing drops tabs/newlines and reads \\ as /."""
    cleaned = re.sub(r"[\t\n\r]", "", location).replace("\\", "/")
    return urlsplit(urljoin("http://localhost/auth/login", cleaned)).netloc


@pytest.mark.parametrize("target, expected", [
    ("/manage/events/", "/manage/events/"),
    ("/manage/events/new?x=1", "/manage/events/new?x=1"),
    ("//evil.example", "/manage/integrations/"),
    ("//evil.example/manage/events/", "/manage/integrations/"),
    ("https://evil.example", "/manage/integrations/"),
    ("https://evil.example/manage/events/", "/manage/integrations/"),
    ("http:evil.example", "/manage/integrations/"),
    ("javascript:alert(1)", "/manage/integrations/"),
    ("evil.example", "/manage/integrations/"),
    ("///evil.example", "/manage/integrations/"),
    ("\\\\evil.example", "/manage/integrations/"),
    ("/\\evil.example", None),  # let through, but Werkzeug sends it as /%5Cevil.example: still this site
    ("/\t/evil.example", None),
    ("/%2F/evil.example", None),
])
def test_next_only_follows_same_site_paths(client, make_organizer, target, expected):
    make_organizer()
    response = client.post_form("/auth/login", query_string={"next": target},
                                data={"email": EMAIL, "password": PASSWORD})
    assert response.status_code == 303
    location = response.headers["Location"]
    if expected:
        assert location == expected
    assert lands_on(location) == "localhost", location


def test_login_gate_sends_back_to_the_page_asked_for(client, make_organizer):
    make_organizer()
    response = client.get("/manage/events/new")
    assert response.status_code == 302
    location = response.headers["Location"]
    assert location.startswith("/auth/login?next=")
    response = client.post_form(location, {"email": EMAIL, "password": PASSWORD})
    assert response.status_code == 303
    assert response.headers["Location"].startswith("/manage/events/new")


# --- every non-public route needs login ---------------------------------------------------------------------

def test_route_inventory_is_complete():
    endpoints = {endpoint for _, endpoint, _ in RULES}
    assert PUBLIC_ENDPOINTS <= endpoints
    assert len(PROTECTED) >= 25  # the gate test below really covers the portal


@pytest.mark.parametrize("rule, method", PROTECTED, ids=[f"{m} {r}" for r, m in PROTECTED])
def test_protected_route_needs_login(client, rule, method):
    """A browser is redirected to the login page; an htmx request gets HX-Redirect, never a login page body."""
    url = fill(rule)
    token = client.csrf_token()
    if method == "GET":
        response = client.get(url)
    else:
        response = client.post(url, data={"csrf_token": token})
    assert response.status_code == 302, response.status_code
    assert response.headers["Location"].startswith("/auth/login")

    headers = {"HX-Request": "true"}
    if method == "GET":
        response = client.get(url, headers=headers)
    else:
        response = client.post(url, headers={**headers, "X-CSRFToken": token})
    assert response.headers.get("HX-Redirect", "").startswith("/auth/login"), response.status_code
    assert "Location" not in response.headers  # htmx would follow a 302 and swap the login page in
    body = response.get_data(as_text=True)
    assert "Log in" not in body and "<form" not in body and "<html" not in body


def test_public_pages_need_no_login(client):
    assert client.get("/auth/login").status_code == 200
    assert client.get("/auth/signup").status_code == 200
    assert client.get("/healthz").status_code == 200
    response = client.get("/")
    assert response.status_code == 302 and response.headers["Location"] == "/auth/login"


# --- navigation ------------------------------------------------------------------------------------------------

def nav(page: str) -> dict[str, bool]:
    """The top navigation's tabs: label -> marked as the current page."""
    block = re.search(r'<nav class="tabs" aria-label="Main">(.*?)</nav>', page, re.S)
    assert block, "no top navigation"
    return {label: "aria-current=\"page\"" in attrs
            for attrs, label in re.findall(r"<a ([^>]*)>([^<]+)</a>", block.group(1))}


def test_integrations_page_has_the_top_nav_with_integrations_current(client, organizer):
    page = client.get("/manage/integrations/").get_data(as_text=True)
    assert nav(page) == {"Events": False, "Integrations": True}
    assert 'href="/manage/integrations/"' in page and 'href="/manage/events/"' in page
    assert 'aria-label="Account menu"' in page


# The event page renders the discount form's SelectField; its tuple choices warn in WTForms 3.3 (see test_events.py).
@pytest.mark.filterwarnings("ignore:Passing SelectField choices as tuples:DeprecationWarning")
def test_events_tab_is_current_on_events_and_order_pages(client, app, organizer, make_event):
    assert nav(client.get("/manage/events/").get_data(as_text=True)) == {"Events": True, "Integrations": False}
    event_id = make_event(organizer)
    assert nav(client.get(f"/manage/events/{event_id}").get_data(as_text=True))["Events"] is True
    from portal.events.models import Event

    with app.app_context():
        event = db.session.get(Event, event_id)
        public_id, type_id = event.public_id, event.ticket_types[0].id
    response = client.post_form(f"/e/{public_id}/checkout", {
        f"qty-{type_id}": "1", "first_name": "Pat", "last_name": "Buyer", "email": "pat@buyer.example",
        "attendee-0-same": "1"})
    assert response.status_code == 303
    from portal.orders.models import Order

    with app.app_context():
        order_id = db.session.scalar(select(Order.id))
    page = client.get(f"/manage/orders/{order_id}").get_data(as_text=True)
    assert nav(page) == {"Events": True, "Integrations": False}


def test_logged_out_pages_have_no_portal_nav(client):
    assert '<nav class="tabs"' not in client.get("/auth/login").get_data(as_text=True)
