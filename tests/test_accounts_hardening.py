"""Accounts under pressure: limits that hold under concurrency (over real HTTP, threads against a served portal),
sessions that really end, passwords that are not easy to guess, and a login that takes as long either way."""
import re
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from sqlalchemy import func, select

from devtools.processes import PortalThread
from portal.auth.models import Organizer
from portal.extensions import db

EMAIL, PASSWORD = "ada@organizer.example", "correct horse battery"


@pytest.fixture
def served(app):
    """The portal over real HTTP, on the tests' database and Redis."""
    from portal import create_app

    server = PortalThread()
    server.start(create_app({**app.config, "PUBLIC_BASE_URL": server.url}))
    yield server
    server.shutdown()


def csrf(session: requests.Session, url: str) -> str:
    page = session.get(url, timeout=10).text
    return re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)


def post_login(base: str, password: str) -> int:
    with requests.Session() as browser:
        token = csrf(browser, f"{base}/auth/login")
        return browser.post(f"{base}/auth/login", data={"csrf_token": token, "email": EMAIL, "password": password},
                            allow_redirects=False, timeout=30).status_code


def test_forty_parallel_wrong_logins_get_five_tries_and_no_5xx(served, app, make_organizer):
    make_organizer()
    with ThreadPoolExecutor(max_workers=20) as pool:
        statuses = list(pool.map(lambda _: post_login(served.url, "wrong password!"), range(40)))
    assert all(status < 500 for status in statuses), statuses
    assert statuses.count(401) == 5 and statuses.count(429) == 35, statuses  # as many tries as in sequence
    assert post_login(served.url, PASSWORD) == 429  # the account ends locked, even for the right password


def test_parallel_sign_ups_with_one_e_mail_make_one_account(served, app):
    def sign_up(i):
        with requests.Session() as browser:
            token = csrf(browser, f"{served.url}/auth/signup")
            response = browser.post(f"{served.url}/auth/signup", allow_redirects=False, timeout=30, data={
                "csrf_token": token, "name": f"Ada {i}", "email": EMAIL, "password": PASSWORD})
            return response.status_code, response.text

    with ThreadPoolExecutor(max_workers=10) as pool:
        answers = list(pool.map(sign_up, range(10)))
    statuses = [status for status, _ in answers]
    assert statuses.count(303) == 1 and statuses.count(422) == 9, statuses
    assert all("exists already" in text for status, text in answers if status == 422)
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Organizer)) == 1


def logged_in(client) -> bool:
    return client.get("/manage/integrations/").status_code == 200


def test_a_copied_cookie_is_refused_after_logout(client, app, organizer):
    copy = app.test_client()
    cookie = client.get_cookie("session")
    copy.set_cookie(cookie.key, cookie.value)
    assert logged_in(copy)  # the copy works while the session does
    assert client.post_form("/auth/logout").status_code == 303
    assert not logged_in(copy)
    assert not logged_in(client)


def test_a_new_password_ends_every_other_session(client, app, organizer, login):
    other = app.test_client()
    login(who=other)
    new = "orbit maple trumpet seven"
    response = client.post_form("/auth/account", {"current": PASSWORD, "new": new})
    assert response.status_code == 303
    assert logged_in(client) and not logged_in(other)
    other.post_form("/auth/login", {"email": EMAIL, "password": new})
    assert logged_in(other)


def test_log_out_everywhere(client, app, organizer, login):
    other = app.test_client()
    login(who=other)
    assert client.post_form("/auth/logout-everywhere").status_code == 303
    assert not logged_in(client) and not logged_in(other)


def test_an_idle_session_ends(client, app, organizer, monkeypatch):
    assert logged_in(client)
    import portal.auth.login

    later = int(time.time()) + app.config["SESSION_IDLE_SECONDS"] + 5
    monkeypatch.setattr(portal.auth.login, "_now", lambda: later)
    assert not logged_in(client)


@pytest.mark.parametrize("password, message", [
    ("1234567890", "Choose a harder password"),
    ("password1234", "Choose a harder password"),
    ("qwertyuiop", "Choose a harder password"),
    ("ada@organizer.example", "Choose a harder password"),  # the account's own e-mail
    ("x" * 129, "Use at most 128 characters."),
    ("short", "Use at least 10 characters."),
])
def test_easy_passwords_are_refused_with_a_reason(client, app, password, message):
    response = client.post_form("/auth/signup", {"name": "Ada Events", "email": EMAIL, "password": password})
    assert response.status_code == 422
    assert re.search(rf'id="password-error">{re.escape(message)}', response.get_data(as_text=True))
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Organizer)) == 0


def test_a_new_password_follows_the_same_policy(client, organizer):
    response = client.post_form("/auth/account", {"current": PASSWORD, "new": "1234567890"})
    assert response.status_code == 422 and "Choose a harder password" in response.get_data(as_text=True)
    wrong = client.post_form("/auth/account", {"current": "not it at all", "new": "orbit maple trumpet seven"})
    assert wrong.status_code == 422 and "That is not your current password." in wrong.get_data(as_text=True)


def test_an_unknown_e_mail_costs_a_password_check_too(client, make_organizer, monkeypatch):
    """Login takes as long for an e-mail with no account: it checks a password hash all the same."""
    import portal.auth.views as views

    checked = []
    real = views.check_password_hash
    monkeypatch.setattr(views, "check_password_hash", lambda *args: checked.append(args) or real(*args))
    make_organizer()
    assert client.post_form("/auth/login", {"email": "nobody@nowhere.example", "password": PASSWORD}).status_code == 401
    assert len(checked) == 1


def test_database_errors_carry_no_parameters(app, make_organizer):
    """A failing statement's message names no bound value (here a password hash)."""
    from sqlalchemy.exc import IntegrityError

    make_organizer()
    with app.app_context():
        hashed = db.session.scalar(select(Organizer.password_hash))
        db.session.add(Organizer(name="Copy", email=EMAIL, password_hash=hashed))
        with pytest.raises(IntegrityError) as raised:
            db.session.commit()
        db.session.rollback()
    assert hashed not in str(raised.value) and "hidden due to hide_parameters" in str(raised.value)


def test_the_sqlite_file_is_readable_by_its_owner_only(app, database_url):
    import os
    import stat

    if not database_url.startswith("sqlite"):
        pytest.skip("a PostgreSQL server keeps its own files")
    path = database_url.removeprefix("sqlite:///")
    with app.app_context():
        db.session.execute(select(1))
        db.session.rollback()
    for name in (path, f"{path}-wal"):
        if os.path.exists(name):
            assert stat.S_IMODE(os.stat(name).st_mode) == 0o600, name


@pytest.mark.parametrize("key", ["not-a-key", "short,", "x" * 44])
def test_a_malformed_token_key_is_refused_at_start_in_one_line(tmp_path, key):
    import subprocess
    import sys

    from tests.conftest import ROOT

    env = {"PATH": "/usr/bin:/bin", "PORTAL_ENV": "production", "SECRET_KEY": "s" * 40,
           "TOKEN_ENCRYPTION_KEY": key, "DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}"}
    result = subprocess.run([sys.executable, "-c", "import wsgi"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "TOKEN_ENCRYPTION_KEY key 1 is not a Fernet key" in lines[0], result.stderr
    assert "Traceback" not in result.stderr
