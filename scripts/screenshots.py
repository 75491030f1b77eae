"""Take the README's screenshots of the portal with headless Chromium, on a throwaway installation.

    .venv/bin/python scripts/screenshots.py              # writes docs/screenshots/*.png
    .venv/bin/python scripts/screenshots.py --out /tmp/shots

Everything runs here and is thrown away afterwards: a redis-server of its own on a free port, a temporary
SQLite database (migrated with Flask-Migrate), the Klaviyo sandbox in a thread, the portal over HTTP in a
thread (werkzeug make_server), and a real `python worker.py` that syncs purchases to the sandbox.
Playwright drives Debian's Chromium (/usr/bin/chromium); it never downloads a browser.
"""
from __future__ import annotations

import argparse
import os
import re
import secrets
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devtools import processes  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
CALLBACK = "/manage/integrations/klaviyo/callback"
EMAIL, PASSWORD, NAME = "ada@harbourlights.example", "correct horse battery", "Harbour Lights Events"
WIDTH = 1280
MAX_BYTES = 400 * 1024


def log(message: str) -> None:
    print(message, flush=True)


# --- the installation ------------------------------------------------------------------------------------------------

class Stack:
    """Redis, the sandbox, the portal and a worker, started in that order and stopped in reverse."""

    def __init__(self, workdir: Path, stack: ExitStack):
        from cryptography.fernet import Fernet

        self.dir = workdir
        redis = processes.RedisServer(workdir).start()
        stack.callback(redis.stop)
        self.redis_url = redis.url

        # The portal's socket first, so the sandbox can know its callback and the app its own URL.
        self.portal = processes.PortalThread()
        self.url = self.portal.url

        self.sandbox = processes.sandbox_in_thread(workdir / "sandbox.db", [self.url + CALLBACK])
        stack.callback(self.sandbox.shutdown)

        self.database_url = f"sqlite:///{workdir / 'portal.db'}"
        self.secret_key = secrets.token_urlsafe(32)
        self.token_key = Fernet.generate_key().decode()
        self.app = self._create_app()
        self._migrate()
        self.portal.start(self.app)
        stack.callback(self.portal.shutdown)

        self.worker = processes.start_worker(self._worker_env(), workdir / "worker.log")
        stack.callback(processes.stop, self.worker)

    def _create_app(self):
        from portal import create_app

        sandbox = self.sandbox.url
        return create_app({
            "SECRET_KEY": self.secret_key, "TOKEN_ENCRYPTION_KEY": self.token_key,
            "SQLALCHEMY_DATABASE_URI": self.database_url, "REDIS_URL": self.redis_url,
            "PUBLIC_BASE_URL": self.url, "SESSION_COOKIE_SECURE": False, "REMEMBER_COOKIE_SECURE": False,
            "KLAVIYO_CLIENT_ID": "sandbox-client-id", "KLAVIYO_CLIENT_SECRET": "sandbox-client-secret",
            "KLAVIYO_OAUTH_BASE": sandbox, "KLAVIYO_API_BASE": sandbox, "KLAVIYO_SANDBOX_URL": sandbox,
            "KLAVIYO_TIMEOUT": 5.0, "RETRY_BASE_SECONDS": 0.2, "SWEEP_INTERVAL_SECONDS": 1,
            "PROPAGATE_EXCEPTIONS": True,  # a server error shows its traceback here (werkzeug logs it)
            "SUPPORT_EMAIL": "help@harbourlights.example",  # what an operator sets (the default is support@ its domain)
        })

    def _migrate(self):
        from flask_migrate import upgrade

        with self.app.app_context():
            upgrade(directory=str(ROOT / "migrations"))

    def _worker_env(self) -> dict:
        return processes.child_env({
            "DATABASE_URL": self.database_url, "REDIS_URL": self.redis_url, "SECRET_KEY": self.secret_key,
            "TOKEN_ENCRYPTION_KEY": self.token_key, "PUBLIC_BASE_URL": self.url,
            "KLAVIYO_CLIENT_ID": "sandbox-client-id", "KLAVIYO_CLIENT_SECRET": "sandbox-client-secret",
            "KLAVIYO_OAUTH_BASE": self.sandbox.url, "KLAVIYO_API_BASE": self.sandbox.url, "KLAVIYO_TIMEOUT": "5",
            "RETRY_BASE_SECONDS": "0.2", "SWEEP_INTERVAL_SECONDS": "1",
            "PYTHONWARNINGS": "ignore::DeprecationWarning",
        })

    # --- data set up directly (the screenshots are about the pages, not about typing) ---

    def seed(self) -> dict:
        from portal.auth.models import Organizer
        from portal.events.models import Event, TicketType
        from portal.extensions import db

        with self.app.app_context():
            organizer = Organizer(name=NAME, email=EMAIL)
            organizer.set_password(PASSWORD)
            db.session.add(organizer)
            db.session.flush()
            live = Event(organizer_id=organizer.id, name="Harbour Lights Festival 2027", venue="Pier 4, Boston",
                         timezone="America/New_York", starts_at=datetime(2027, 9, 11, 22, tzinfo=timezone.utc),
                         ends_at=datetime(2027, 9, 12, 3, 30, tzinfo=timezone.utc), currency="USD", status="live",
                         went_live_at=datetime.now(timezone.utc) - timedelta(days=2),
                         description="Lanterns on the water, food trucks and three stages of live music.")
            live.ticket_types = [
                TicketType(name="General Admission", price=Decimal("45.00"), fee=Decimal("3.50"), capacity=800),
                TicketType(name="VIP Deck", price=Decimal("120.00"), fee=Decimal("8.00"), capacity=60),
            ]
            draft = Event(organizer_id=organizer.id, name="Winter Jazz Nights", venue="The Lantern Room, Cambridge",
                          timezone="America/New_York", starts_at=datetime(2027, 12, 4, 0, 30, tzinfo=timezone.utc),
                          ends_at=datetime(2027, 12, 4, 4, tzinfo=timezone.utc), currency="USD", status="draft")
            draft.ticket_types = [TicketType(name="Seated", price=Decimal("35.00"), fee=Decimal("2.00"), capacity=120)]
            db.session.add_all([live, draft])
            db.session.commit()
            return {"organizer_id": organizer.id, "event_id": live.id, "public_id": live.public_id}

    def force_needs_reconnect(self, organizer_id: int) -> None:
        """The app was removed inside Klaviyo; the next token refresh gets invalid_grant."""
        import requests

        from portal.sync import connection as service
        from portal.klaviyo import client

        requests.post(f"{self.sandbox.url}/_sandbox/uninstall", json={}, timeout=5).raise_for_status()
        from portal.crypto import decrypt

        with self.app.app_context():
            connection = service.connection_for(organizer_id)
            try:  # what a worker does on a 401: refresh once, with the token Klaviyo refused
                service.refresh(connection, stale=decrypt(connection.access_token_enc))
            except client.TokenRejected:
                pass
            from portal.extensions import db

            db.session.refresh(connection)
            assert connection.status == "needs_reconnect", connection.status


# --- the pages -------------------------------------------------------------------------------------------------------

class Shooter:
    def __init__(self, out: Path):
        self.out = out
        self.taken: list[Path] = []

    def __call__(self, page, name: str, full_page: bool = True, locator=None):
        path = self.out / name
        if locator is not None:
            locator.screenshot(path=str(path), animations="disabled")
        else:
            page.screenshot(path=str(path), full_page=full_page, animations="disabled")
        self.taken.append(path)
        log(f"  {name}  {path.stat().st_size // 1024} KB")


def log_in(page, expect):
    page.goto("/auth/login")
    page.get_by_label("E-mail").fill(EMAIL)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("navigation", name="Main")).to_be_visible()


def klaviyo_card(page):
    return page.get_by_role("region", name="Marketing Automation").get_by_role("article", name=re.compile("Klaviyo"))


def choose_quantities(page, quantities: dict[str, int]) -> None:
    """Type the quantities; wait for each attendee-fields refresh the page asks for (whatever its outcome)."""
    for name, quantity in quantities.items():
        field = page.get_by_label(re.compile(name))
        with page.expect_response(lambda r: "/attendees" in r.url):
            field.fill(str(quantity))


def shoot_all(stack: Stack, data: dict, shot: Shooter) -> None:
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=20_000)
    event_id, public_id = data["event_id"], data["public_id"]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": WIDTH, "height": 900}, base_url=stack.url)
        context.set_default_timeout(20_000)
        page = context.new_page()

        log_in(page, expect)
        page.goto("/manage/integrations/")
        expect(klaviyo_card(page).get_by_role("button", name="Connect")).to_be_visible()
        shot(page, "integrations-not-connected.png")

        klaviyo_card(page).get_by_role("button", name="Connect").click()
        expect(page.get_by_role("button", name="Allow")).to_be_visible()
        shot(page, "klaviyo-consent.png")
        page.get_by_role("button", name="Allow").click()
        expect(klaviyo_card(page).get_by_role("img", name="Connected")).to_be_visible()

        page.get_by_role("navigation", name="Main").get_by_role("link", name="Events").click()
        expect(page.get_by_role("heading", name="Events", level=1)).to_be_visible()
        shot(page, "events-list.png")

        # Widget Customization with the live preview, after changing the accent colour and the button label.
        page.goto(f"/manage/events/{event_id}/widget")
        frame = page.frame_locator("#widget-frame")
        label = page.get_by_label("Button label")
        label.fill("Get festival passes")
        label.press("Tab")
        accent = page.get_by_label("Accent colour", exact=True)
        accent.fill("#0f766e")
        accent.press("Tab")
        expect(frame.get_by_role("button", name="Get festival passes")).to_have_css(
            "background-color", "rgb(15, 118, 110)")
        page.reload()  # the saved settings, with no preview refresh still pending
        expect(frame.get_by_role("button", name="Get festival passes")).to_be_visible()
        shot(page, "widget-customization.png")

        # A test purchase from the Event Page preview: first with mistakes, then corrected.
        page.goto(f"/e/{public_id}?preview=1")
        choose_quantities(page, {"General Admission": 3, "VIP Deck": 1})
        purchaser = page.get_by_role("group", name="Purchaser")
        purchaser.get_by_label("First name").fill("Pat")
        purchaser.get_by_label("Last name").fill("Buyer")
        purchaser.get_by_label("E-mail").fill("pat@buyer")
        purchaser.get_by_label(re.compile("Phone")).fill("12")
        page.get_by_role("button", name="Get tickets").click()
        expect(page.get_by_role("alert").first).to_be_visible()
        expect(page.locator(".error-text:not(:empty)").first).to_be_visible()
        shot(page, "checkout-errors.png")

        purchaser = page.get_by_role("group", name="Purchaser")
        purchaser.get_by_label("E-mail").fill("pat@buyer.example")
        purchaser.get_by_label(re.compile("Phone")).fill("+1 617 555 0142")
        attendees = {1: "same", 2: ("Sam", "Guest", "sam@guest.example"), 3: ("Sam", "Guest", "SAM@Guest.example"),
                     4: ("Alex", "Rivera", "")}
        for number, who in attendees.items():
            group = page.get_by_role("group", name=re.compile(rf"^Ticket {number}:"))
            if who == "same":
                group.get_by_label("Same as purchaser").check()
                continue
            group.get_by_label("First name").fill(who[0])
            group.get_by_label("Last name").fill(who[1])
            group.get_by_label(re.compile("E-mail")).fill(who[2])
        page.get_by_role("button", name="Get tickets").click()
        expect(page.get_by_role("heading", name=re.compile("You're going to"))).to_be_visible()
        panel = page.get_by_role("region", name="Klaviyo sync")
        rows = panel.locator("tbody tr")
        expect(rows).to_have_count(6)
        expect(rows.filter(has_text="Accepted by Klaviyo")).to_have_count(6, timeout=30_000)
        shot(page, "confirmation-sync-panel.png")

        panel.get_by_role("link", name=re.compile("Open the order")).click()
        expect(page.get_by_role("heading", name="Klaviyo sync timeline")).to_be_visible()
        shot(page, "order-timeline.png")

        page.get_by_role("navigation", name="Main").get_by_role("link", name="Integrations").click()
        expect(page.get_by_text("4 of 4 done")).to_be_visible()
        shot(page, "integrations-connected.png")

        more = klaviyo_card(page).get_by_role("button", name=re.compile("More actions"))
        more.click()
        page.get_by_role("menuitem", name="View Details").click()
        details = page.get_by_role("region", name="Klaviyo connection details")
        expect(details).to_contain_text("Sandbox Festival Co.")
        shot(page, "view-details.png")

        page.goto("/manage/integrations/")
        klaviyo_card(page).get_by_role("button", name=re.compile("More actions")).click()
        page.get_by_role("menuitem", name="Disconnect").click()
        expect(page.get_by_role("region", name="Disconnect Klaviyo?")).to_be_visible()
        shot(page, "disconnect-confirm.png")

        page.goto(stack.sandbox.url + "/")
        expect(page.get_by_role("heading", name="Received events")).to_be_visible()
        shot(page, "sandbox-received-events.png")

        # A phone: the Integrations page at 390 px.
        phone = browser.new_context(viewport={"width": 390, "height": 844}, base_url=stack.url,
                                    is_mobile=True, has_touch=True, device_scale_factor=1)
        small = phone.new_page()
        log_in(small, expect)
        small.goto("/manage/integrations/")
        expect(klaviyo_card(small).get_by_role("img", name="Connected")).to_be_visible()
        shot(small, "integrations-phone.png")
        phone.close()

        shoot_organizer_pages(browser, stack, data, shot)

        # Klaviyo stops accepting the connection (app removed there): the card asks to reconnect.
        stack.force_needs_reconnect(data["organizer_id"])
        page.goto("/manage/integrations/")
        expect(klaviyo_card(page).get_by_role("button", name="Reconnect")).to_be_visible()
        shot(page, "integrations-needs-reconnect.png")

        context.close()
        browser.close()


def seed_more_orders(stack: Stack, data: dict) -> None:
    """For the orders list: a discount code, store orders (one paid in euros), a refund, a test order, and orders
    whose attendee's address is at a test domain Klaviyo drops."""
    from portal.events.models import DiscountCode, Event
    from portal.extensions import db
    from portal.orders import lifecycle
    from portal.orders.models import Order
    from portal.orders.service import AttendeeInput, LinePrice, OrderInput, place_order

    with stack.app.app_context():
        event = db.session.get(Event, data["event_id"])
        db.session.add(DiscountCode(event_id=event.id, code="HARBOUR10", kind="percent", amount=Decimal("10")))
        db.session.commit()
        general, vip = event.ticket_types
        people = [("Maya", "Okafor", "maya.okafor@lanterns.example"), ("Jonas", "Berg", "jonas.berg@fjord.example"),
                  ("Priya", "Raman", "priya@raman.example"), ("Tom", "Keller", "tom@example.com"),
                  ("Ana", "Souza", "ana.souza@porto.example")]
        placed = []
        for i, (first, last, email) in enumerate(people):
            store = i in (1, 2)
            lines = [(general, AttendeeInput(first, last, email))] + ([(vip, AttendeeInput(first, last, email))]
                                                                      if i % 2 else [])
            order = OrderInput(first_name=first, last_name=last, email=email, phone=None, lines=lines,
                               source="shopify" if store else "widget", is_test=i == 4)
            if store:
                order.currency = "EUR" if i == 1 else "USD"
                order.prices = [LinePrice(t.price, t.price, Decimal("0")) for t, _ in lines]
                order.external_ref = f"shopify:58349213778{i}"
            placed.append(place_order(db.session.get(Event, event.id), order).id)
        lifecycle.refund_order(db.session.get(Order, placed[2]), ticket_ids=[], amount=Decimal("20"),
                               include_fees=False, reason="Parking was closed", by=f"{NAME} <{EMAIL}>")


def host_site(snippet: str):
    """An organizer's own site on another origin (localhost, where the portal is 127.0.0.1) with the snippet in it."""
    import threading

    from werkzeug.serving import make_server

    html = ("<!doctype html><meta name=viewport content='width=device-width'><title>Harbour Lights</title>"
            "<body style='font-family:Georgia,serif;background:#f3efe6;margin:0'>"
            "<header style='background:#0f3b4c;color:#fff;padding:1.2rem 1.5rem'><b>Harbour Lights</b> · Pier 4</header>"
            "<main style='max-width:760px;margin:0 auto;padding:1.5rem'><h1>Tickets</h1>"
            "<p>Lanterns on the water, food trucks and three stages of live music.</p>"
            f"{snippet}<p style='margin-top:1.5rem'>Questions? Write to hello@harbourlights.example</p></main>")
    server = make_server("127.0.0.1", 0, lambda env, start: (
        start("200 OK", [("Content-Type", "text/html; charset=utf-8")]), [html.encode()])[1])
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://localhost:{server.server_port}/"


def shoot_organizer_pages(browser, stack: Stack, data: dict, shot: Shooter) -> None:
    """What a paying organizer sees (issue 16), desktop and phone: the checkout adding up as the buyer types, the
    widget sizing itself on the organizer's own site, the orders list, and an order in plain words."""
    from playwright.sync_api import expect

    seed_more_orders(stack, data)
    event_id, public_id = data["event_id"], data["public_id"]
    for width, suffix in ((WIDTH, ""), (390, "-phone")):
        phone = width < WIDTH
        context = browser.new_context(viewport={"width": width, "height": 900 if not phone else 844},
                                      base_url=stack.url, is_mobile=phone, has_touch=phone, device_scale_factor=1)
        page = context.new_page()
        log_in(page, expect)

        page.goto(f"/manage/events/{event_id}/orders")
        expect(page.get_by_text(re.compile("Sending"))).to_have_count(0, timeout=30_000)
        page.reload()
        expect(page.get_by_text("Paid in EUR")).to_be_visible()
        shot(page, f"orders-list{suffix}.png", full_page=not phone)

        page.get_by_role("link", name=re.compile(r"^#\d+$")).last.click()  # the first order: the test purchase
        expect(page.get_by_role("heading", name="Klaviyo sync timeline")).to_be_visible()
        if phone:
            page.set_viewport_size({"width": width, "height": 1900})  # the tickets, the line, the first events
            shot(page, "order-page-phone.png", full_page=False)
            page.set_viewport_size({"width": width, "height": 844})
        else:
            page.locator("details.tech summary").first.click()
            page.evaluate("window.scrollTo(0, 0)")
            shot(page, "order-details-open.png")

        snippet = None
        if not phone:
            page.goto(f"/manage/events/{event_id}/widget")
            snippet = page.locator("#embed-snippet").inner_text()
            data["snippet"] = snippet
        server, url = host_site(data["snippet"])
        try:
            page.goto(url)
            widget = page.frame_locator("iframe[data-ticketing-widget]")
            widget.get_by_label(re.compile("General Admission")).fill("2")
            expect(widget.get_by_role("group", name="Ticket 2: General Admission")).to_be_visible()
            page.wait_for_function("document.querySelector('iframe').getBoundingClientRect().height > 1200")
            # A viewport as tall as the page: a full-page screenshot would not paint the other origin's frame
            # below the first screen.
            height = page.evaluate("document.documentElement.scrollHeight")
            page.set_viewport_size({"width": width, "height": min(height, 2600)})
            shot(page, f"widget-embedded{suffix}.png", full_page=False)
            page.set_viewport_size({"width": width, "height": 900 if not phone else 844})
        finally:
            server.shutdown()
            server.server_close()

        page.goto(f"/e/{public_id}")
        page.get_by_label(re.compile("General Admission")).fill("2")
        page.get_by_label(re.compile("VIP Deck")).fill("1")
        page.get_by_label(re.compile("Discount code")).fill("HARBOUR10")
        expect(page.get_by_text("Code HARBOUR10 applied")).to_be_visible()
        if phone:
            page.get_by_role("region", name="Order summary").scroll_into_view_if_needed()
            shot(page, "checkout-summary-phone.png", full_page=False)
        else:
            shot(page, "checkout-summary.png", full_page=False)
        context.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots", help="where the PNGs go")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")
    import warnings

    warnings.simplefilter("ignore", DeprecationWarning)
    started = time.time()
    shot = Shooter(args.out)
    with tempfile.TemporaryDirectory(prefix="portal-shots-") as tmp, ExitStack() as stack:
        log("Starting Redis, the Klaviyo sandbox, the portal and a worker…")
        installation = Stack(Path(tmp), stack)
        data = installation.seed()
        log(f"Portal {installation.url} · sandbox {installation.sandbox.url}. Taking screenshots into {args.out}:")
        try:
            shoot_all(installation, data, shot)
        except Exception:
            worker_log = Path(tmp) / "worker.log"
            if worker_log.exists():
                log("--- worker.log (last lines) ---\n" + "\n".join(worker_log.read_text(errors="replace").splitlines()[-30:]))
            raise
    too_big = [p for p in shot.taken if p.stat().st_size > MAX_BYTES]
    log(f"{len(shot.taken)} screenshots in {time.time() - started:.1f} s.")
    for path in too_big:
        log(f"WARNING: {path.name} is {path.stat().st_size // 1024} KB (over {MAX_BYTES // 1024} KB)")
    return 1 if too_big else 0


if __name__ == "__main__":
    sys.exit(main())
