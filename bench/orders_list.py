"""Orders list benchmark: one event with N orders (10,000 by default: tickets, attendees and 4-5 Klaviyo outbox rows
each, a mix of statuses, test orders and channels), then the organizer's orders list, timed request by request
through the app (the test client, so no network): the first page, a deep page, a status filter, a search by name,
a channel filter. Prints p50/p95 and the SQL statements per request, and the same for another commit side by side
(by default HEAD, exported with bench/snapshot.sh and run from there with this same script).

    .venv/bin/python -m bench.orders_list                         # 10,000 orders, SQLite, beside HEAD
    .venv/bin/python -m bench.orders_list --orders 1000 --requests 20 --compare none
    .venv/bin/python -m bench.orders_list --database-url postgresql+psycopg://postgres@127.0.0.1:5432/bench
    .venv/bin/python -m bench.orders_list --compare 5feec0b --baseline-requests 3

Target (issue 16): p50 < 50 ms at 10,000 orders.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.harness import (  # noqa: E402
    PASSWORD, ensure_postgres_database, loadavg, machine, percentile, run_on_commit, wait_for_quiet,
)

EMAIL = "lists@organizer.test"
# (name, query string): what an organizer does on the list. A commit without filters ignores the query string and
# shows its whole list: that is what it costs there.
CASES = [("first page", ""), ("page 100", "page=100"), ("status: refunded", "status=refunded"),
         ("search by name", "q=buyer4242"), ("channel: shopify, real", "channel=shopify&kind=real")]
STATUSES = ["paid"] * 80 + ["partly_refunded"] * 8 + ["refunded"] * 5 + ["cancelled"] * 7
SOURCES = ["event_page"] * 60 + ["widget"] * 25 + ["shopify"] * 10 + ["wix"] * 5


def seed(app, orders: int) -> int:
    """An organizer, a live GBP event and `orders` orders, written in bulk. Returns the event id."""
    from sqlalchemy import insert

    from portal.auth.models import Organizer
    from portal.events.models import Event, TicketType
    from portal.extensions import db
    from portal.orders.models import Attendee, Order, Ticket
    from portal.sync.models import OutboxEvent

    with app.app_context():
        organizer = Organizer(name="List Bench Events", email=EMAIL)
        organizer.set_password(PASSWORD)
        db.session.add(organizer)
        db.session.flush()
        event = Event(organizer_id=organizer.id, name="Harbour Lights Festival", venue="Pier 4",
                      timezone="Europe/London", starts_at=datetime(2027, 9, 11, 18, tzinfo=timezone.utc),
                      ends_at=datetime(2027, 9, 11, 23, tzinfo=timezone.utc), currency="GBP", status="live")
        event.ticket_types = [TicketType(name="General Admission", price=Decimal("45.00"), fee=Decimal("3.50"),
                                         capacity=10 ** 6),
                              TicketType(name="VIP Deck", price=Decimal("120.00"), fee=Decimal("8.00"),
                                         capacity=10 ** 6)]
        db.session.add(event)
        db.session.commit()
        general, vip = event.ticket_types
        started = datetime(2027, 1, 1, tzinfo=timezone.utc)
        order_rows, ticket_rows, attendee_rows, outbox_rows = [], [], [], []
        attendee_id = 0
        for i in range(1, orders + 1):
            source, status = SOURCES[i % len(SOURCES)], STATUSES[(i * 7) % len(STATUSES)]
            count = 1 + i % 3
            email = f"pat.buyer{i}@fans-mail.net"
            total = Decimal("48.50") * count
            order_rows.append({
                "id": i, "public_token": uuid.uuid4().hex, "organizer_id": organizer.id, "event_id": event.id,
                "source": source, "is_test": i % 10 == 0, "first_name": "Pat", "last_name": f"Buyer{i}",
                "email": email, "phone": None, "currency": "USD" if source == "shopify" and i % 3 == 0 else "GBP",
                "discount_code": None, "subtotal": Decimal("45.00") * count, "discount_total": Decimal("0"),
                "fee_total": Decimal("3.50") * count, "total": total, "notes": "",
                "placed_at": started + timedelta(minutes=i), "external_ref": f"{source}:{i}" if source in (
                    "shopify", "wix") else None, "status": status,
                "refunded_total": total if status == "refunded" else (Decimal("48.50") if status == "partly_refunded"
                                                                      else Decimal("0")),
            })
            metrics = ["Placed Order"]
            for position in range(count):
                ticket_id = str(uuid.uuid4())
                attendee_id += 1
                ticket_type = vip if position == 2 else general
                ticket_rows.append({"id": ticket_id, "order_id": i, "ticket_type_id": ticket_type.id,
                                    "position": position, "type_name": ticket_type.name,
                                    "base_price": ticket_type.price, "final_price": ticket_type.price,
                                    "fee": ticket_type.fee, "status": "cancelled" if status == "cancelled" else "valid",
                                    "refunded_amount": Decimal("0")})
                guest = position == 1
                attendee_rows.append({"id": attendee_id, "ticket_id": ticket_id,
                                      "first_name": "Sam" if guest else "Pat",
                                      "last_name": f"Guest{i}" if guest else f"Buyer{i}",
                                      "email": f"sam.guest{i}@fans-mail.net" if guest else email, "phone": None})
                metrics.append("Ordered Experience")
                if guest:
                    metrics.append("Registered Attendee")
            for n, metric in enumerate(metrics):
                state = "failed" if i % 97 == 0 and n == 0 else ("pending" if i > orders - 20 else "sent")
                outbox_rows.append({"organizer_id": organizer.id, "order_id": i, "metric": metric,
                                    "unique_id": f"bench_{i}_{n}", "profile_key": email, "payload": "{}",
                                    "status": state, "attempts": 1, "next_attempt_at": started,
                                    "created_at": started, "sent_at": started if state == "sent" else None,
                                    "last_http_status": 202 if state == "sent" else None, "backfill": False})
        for model, rows in ((Order, order_rows), (Ticket, ticket_rows), (Attendee, attendee_rows),
                            (OutboxEvent, outbox_rows)):
            for start in range(0, len(rows), 5000):
                db.session.execute(insert(model), rows[start:start + 5000])
        db.session.commit()
        if db.engine.dialect.name == "postgresql":
            with db.engine.begin() as conn:  # fresh planner statistics, as autovacuum would gather them
                conn.exec_driver_sql("ANALYZE")
        return event.id


def measure(app, event_id: int, requests: int) -> dict:
    from sqlalchemy import event as sa_event

    from portal.extensions import db

    client = app.test_client()
    html = client.get("/auth/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html).group(1)
    assert client.post("/auth/login", data={"csrf_token": token, "email": EMAIL,
                                            "password": PASSWORD}).status_code == 303
    statements = []
    with app.app_context():
        engine = db.engine
    sa_event.listen(engine, "before_cursor_execute", lambda *a, **k: statements.append(1))
    results = {}
    for name, query in CASES:
        url = f"/manage/events/{event_id}/orders" + (f"?{query}" if query else "")
        assert client.get(url).status_code == 200  # warm-up: templates compiled, caches filled
        times, cpu, counts, size = [], [], [], 0
        for _ in range(requests):
            statements.clear()
            started, started_cpu = time.perf_counter(), time.process_time()
            response = client.get(url)
            times.append(time.perf_counter() - started)
            cpu.append(time.process_time() - started_cpu)
            counts.append(len(statements))
            assert response.status_code == 200, (url, response.status_code)
            size = len(response.get_data())
        ms = [t * 1000 for t in times]
        results[name] = {"p50": percentile(ms, 50), "p95": percentile(ms, 95), "n": len(ms),
                         "cpu": percentile([t * 1000 for t in cpu], 50), "statements": max(counts),
                         "kb": round(size / 1024)}
    return results


def fresh_postgres_database(url: str) -> None:
    """Drop and create the database named in the URL: the commit measured beside this one may not know this
    tree's migrations, so it could not migrate the database down."""
    import psycopg

    ensure_postgres_database(url)
    parts = urlsplit(url.replace("postgresql+psycopg://", "postgresql://"))
    name = parts.path.lstrip("/")
    with psycopg.connect(parts._replace(path="/postgres").geturl(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def run_here(args) -> dict:
    """Seed and measure with the code this script was started from."""
    from cryptography.fernet import Fernet
    from flask_migrate import upgrade

    from portal import create_app
    from portal.extensions import db

    tmp = Path(tempfile.mkdtemp(prefix="bench-orders-list-"))
    database_url = args.database_url or f"sqlite:///{tmp / 'portal.db'}"
    if database_url.startswith("postgresql"):
        fresh_postgres_database(database_url)
    app = create_app({"SECRET_KEY": "bench-secret-key-" + "x" * 32, "SQLALCHEMY_DATABASE_URI": database_url,
                      "TOKEN_ENCRYPTION_KEY": Fernet.generate_key().decode(),
                      "REDIS_URL": "redis://127.0.0.1:1/0", "SESSION_COOKIE_SECURE": False,
                      "PUBLIC_BASE_URL": "http://localhost"})
    try:
        with app.app_context():
            upgrade(directory=str(ROOT / "migrations"))
        started = time.time()
        event_id = seed(app, args.orders)
        seeded = time.time() - started
        quiet = wait_for_quiet()
        results = measure(app, event_id, args.requests)
        return {"seconds_to_seed": round(seeded, 1), "results": results, "quiet": quiet}
    finally:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()
        shutil.rmtree(tmp, ignore_errors=True)


def run_commit(rev: str, args) -> dict:
    """The same measurement on another commit (bench.harness.run_on_commit)."""
    return run_on_commit("bench.orders_list", rev, ["--orders", str(args.orders), "--requests",
                                                    str(args.baseline_requests)], args.database_url)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=100, help="timed requests per case")
    parser.add_argument("--compare", default="HEAD~1",
                        help="commit to measure side by side (default: the previous one), or none")
    parser.add_argument("--baseline-requests", type=int, default=5,
                        help="timed requests per case on the other commit (its list may be slow)")
    parser.add_argument("--database-url", help="default: SQLite in a temp dir")
    parser.add_argument("--json", action="store_true", help="print only the figures, as JSON (used for --compare)")
    args = parser.parse_args(argv)
    import warnings

    warnings.simplefilter("ignore", DeprecationWarning)
    here = run_here(args)
    if args.json:
        print(json.dumps(here))
        return 0
    label = "PostgreSQL" if (args.database_url or "").startswith("postgresql") else "SQLite"
    print(f"machine: {machine()}; load average {loadavg()}")
    print(f"=== orders list: {args.orders:,} orders in one event, {label}, {args.requests} timed requests per case "
          f"(seeded in {here['seconds_to_seed']} s; {here['quiet']})")
    other = None
    if args.compare != "none":
        sha = subprocess.run(["git", "rev-parse", "--short", args.compare], cwd=ROOT, check=True,
                             capture_output=True, text=True).stdout.strip()
        print(f"... and on {sha} ({args.baseline_requests} timed requests per case)", flush=True)
        other = run_commit(args.compare, args)
        print(f"    ({other['quiet']})")
    width = max(len(name) for name, _ in CASES)
    # cpu: this process's CPU time per request (p50), which the other sessions sharing the machine do not inflate.
    header = f"{'case':<{width}}  {'this tree: p50 / p95 ms':>24}  {'cpu':>5}  {'SQL':>4}  {'KB':>5}"
    if other:
        header += f"   {sha + ': p50 / p95 ms':>24}  {'cpu':>7}  {'SQL':>5}  {'KB':>5}"
    print(header)
    for name, _ in CASES:
        mine = here["results"][name]
        line = (f"{name:<{width}}  {mine['p50']:>11.1f} / {mine['p95']:>8.1f}  {mine['cpu']:>5.1f}"
                f"  {mine['statements']:>4}  {mine['kb']:>5}")
        if other:
            theirs = other["results"][name]
            line += (f"   {theirs['p50']:>11.1f} / {theirs['p95']:>8.1f}  {theirs.get('cpu', float('nan')):>7.1f}"
                     f"  {theirs['statements']:>5}  {theirs['kb']:>5}")
        print(line)
    worst = max(result["p50"] for result in here["results"].values())
    print(f"target: p50 < 50 ms at 10,000 orders; worst case p50 here {worst:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
