"""Integrations pages benchmark: an organizer connected to Klaviyo with N orders (10,000 by default: tickets,
attendees and 4-5 outbox rows each, about 42,500 rows; most sent, some on the way, failed, held or cancelled,
the first orders sent by a finished history backfill, a few past incidents), then the pages an organizer keeps
open during an on-sale, timed request by request through the app (the test client, so no network): the
Integrations page, View Details (the whole page, and the panel htmx loads from the card's menu), and the
fragments they poll (the live queue, the backfill progress, the install checklist). Prints p50/p95, this
process's CPU time and the SQL statements per request, and the same for another commit side by side (by
default HEAD, exported with bench/snapshot.sh and run from there with this same script).

    .venv/bin/python -m bench.pages                                # 10,000 orders, SQLite, beside HEAD
    .venv/bin/python -m bench.pages --orders 1000 --requests 20 --compare none
    .venv/bin/python -m bench.pages --database-url postgresql+psycopg://postgres@127.0.0.1:5432/bench_pages
    .venv/bin/python -m bench.pages --profile "view details"     # pyinstrument of one case, to /tmp/bench-profiles/
    .venv/bin/python -m bench.pages --explain                     # the query plans of every statement of each case

Target (issue 14): View Details and its live queue p50 <= 15 ms server time after 10,000 orders.
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

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.harness import PASSWORD, loadavg, machine, percentile, run_on_commit, wait_for_quiet  # noqa: E402
from bench.orders_list import fresh_postgres_database  # noqa: E402

EMAIL = "pages@organizer.test"
HX = {"HX-Request": "true"}
# (name, url, htmx?): what the organizer's browser asks for.
CASES = [
    ("integrations page", "/manage/integrations/", False),
    ("view details", "/manage/integrations/klaviyo", False),
    ("view details (htmx panel)", "/manage/integrations/klaviyo", True),
    ("live queue (polls 2 s)", "/manage/integrations/klaviyo/queue", True),
    ("backfill progress (polls)", "/manage/integrations/klaviyo/backfill/progress", True),
    ("checklist (polls)", "/manage/integrations/klaviyo/checklist", True),
]
SCOPES = "accounts:read events:read events:write lists:read lists:write metrics:read profiles:read profiles:write"


def seed(app, orders: int, backfilled: int) -> int:
    """An organizer connected to Klaviyo, a live event, `orders` orders with their outbox rows (the first
    `backfilled` orders sent by a finished backfill run), written in bulk. Returns the organizer's id."""
    from sqlalchemy import insert

    from portal.auth.models import Organizer
    from portal.events.models import Event, TicketType
    from portal.extensions import db
    from portal.orders.models import Attendee, Order, Ticket
    from portal.sync.health_models import Incident
    from portal.sync.models import BackfillRun, KlaviyoConnection, OutboxEvent

    now = datetime.now(timezone.utc)
    with app.app_context():
        organizer = Organizer(name="Pages Bench Events", email=EMAIL)
        organizer.set_password(PASSWORD)
        db.session.add(organizer)
        db.session.flush()
        # Connected without the network: the row the OAuth callback would have written (no tokens are needed to
        # render the pages; nothing is sent).
        db.session.add(KlaviyoConnection(
            organizer_id=organizer.id, status="connected", scope=SCOPES, account_id="SBX01HXYZ",
            organization_name="Sandbox Festival Co.", public_api_key="SbX123", account_timezone="Europe/London",
            account_currency="GBP", account_fetched_at=now - timedelta(days=30),
            connected_by=f"Pages Bench Events <{EMAIL}>", connected_at=now - timedelta(days=30),
            last_success_at=now))
        event = Event(organizer_id=organizer.id, name="Harbour Lights Festival", venue="Pier 4",
                      timezone="Europe/London", starts_at=now + timedelta(days=60),
                      ends_at=now + timedelta(days=60, hours=5), currency="GBP", status="live",
                      preview_opened_at=now - timedelta(days=29))
        event.ticket_types = [TicketType(name="General Admission", price=Decimal("45.00"), fee=Decimal("3.50"),
                                         capacity=10 ** 6),
                              TicketType(name="VIP Deck", price=Decimal("120.00"), fee=Decimal("8.00"),
                                         capacity=10 ** 6)]
        db.session.add(event)
        run = BackfillRun(organizer_id=organizer.id, status="done", total_orders=backfilled,
                          processed_orders=backfilled, last_order_id=backfilled, max_order_id=backfilled,
                          started_at=now - timedelta(days=30), finished_at=now - timedelta(days=30) + timedelta(
                              seconds=60))
        db.session.add(run)
        for k in range(3):
            opened = now - timedelta(days=20 - 5 * k)
            db.session.add(Incident(organizer_id=organizer.id, kind="failing", reason="2 events failed to reach "
                                    "Klaviyo.", opened_at=opened, resolved_at=opened + timedelta(minutes=40),
                                    resolution="Klaviyo accepts events again and nothing is held or failed.",
                                    held_most=0, failed_most=2, opened_mail="off"))
        db.session.commit()
        general, vip = event.ticket_types
        first = now - timedelta(days=29)
        order_rows, ticket_rows, attendee_rows, outbox_rows = [], [], [], []
        attendee_id = 0
        queued = 0
        for i in range(1, orders + 1):
            count = 1 + i % 3
            email = f"pat.buyer{i}@fans-mail.net"
            placed = first + (now - first) * (i / (orders + 1))
            order_rows.append({
                "id": i, "public_token": uuid.uuid4().hex, "organizer_id": organizer.id, "event_id": event.id,
                "source": "widget" if i % 4 else "event_page", "is_test": i % 10 == 0, "first_name": "Pat",
                "last_name": f"Buyer{i}", "email": email, "phone": None, "currency": "GBP", "discount_code": None,
                "subtotal": Decimal("45.00") * count, "discount_total": Decimal("0"),
                "fee_total": Decimal("3.50") * count, "total": Decimal("48.50") * count, "notes": "",
                "placed_at": placed, "external_ref": None, "status": "paid", "refunded_total": Decimal("0"),
            })
            metrics = ["Placed Order"]
            for position in range(count):
                ticket_id = str(uuid.uuid4())
                attendee_id += 1
                ticket_type = vip if position == 2 else general
                ticket_rows.append({"id": ticket_id, "order_id": i, "ticket_type_id": ticket_type.id,
                                    "position": position, "type_name": ticket_type.name,
                                    "base_price": ticket_type.price, "final_price": ticket_type.price,
                                    "fee": ticket_type.fee, "status": "valid", "refunded_amount": Decimal("0")})
                guest = position == 1
                attendee_rows.append({"id": attendee_id, "ticket_id": ticket_id,
                                      "first_name": "Sam" if guest else "Pat",
                                      "last_name": f"Guest{i}" if guest else f"Buyer{i}",
                                      "email": f"sam.guest{i}@fans-mail.net" if guest else email, "phone": None})
                metrics.append("Ordered Experience")
                if guest:
                    metrics.append("Registered Attendee")
            past = i <= backfilled
            for n, metric in enumerate(metrics):
                if i > orders - 20:
                    state = "pending"  # the on-sale's last purchases, on their way
                elif i % 97 == 0 and n == 0:
                    state = "failed"
                elif i % 500 == 250 and n == 1:
                    state = "held"
                elif not past and i % 150 == 7:
                    state = "cancelled"  # an earlier disconnect (these orders' other rows were sent again)
                else:
                    state = "sent"
                queued += state != "cancelled" and past
                error = ("Klaviyo rejected this event: profile email is not a valid e-mail address."
                         if state == "failed" else None)
                outbox_rows.append({
                    "organizer_id": organizer.id, "order_id": i, "metric": metric, "unique_id": f"bench_{i}_{n}",
                    "profile_key": email, "payload": "{}", "status": state, "attempts": 1,
                    "next_attempt_at": placed, "created_at": placed,
                    "sent_at": placed + timedelta(seconds=1) if state == "sent" else None,
                    "last_http_status": 202 if state == "sent" else (400 if error else None),
                    "last_error": error, "backfill": past, "backfill_run_id": run.id if past else None,
                    "kind": "event",
                })
        for model, rows in ((Order, order_rows), (Ticket, ticket_rows), (Attendee, attendee_rows),
                            (OutboxEvent, outbox_rows)):
            for start in range(0, len(rows), 5000):
                db.session.execute(insert(model), rows[start:start + 5000])
        run.events_planned = run.events_queued = queued
        try:  # the tally outbox.record keeps (a commit without it counts the rows on every request)
            from portal.sync.models import OutboxTally
        except ImportError:
            OutboxTally = None
        if OutboxTally is not None:
            db.session.add(OutboxTally(organizer_id=organizer.id,
                                       sent=sum(row["status"] == "sent" for row in outbox_rows)))
        try:  # the run's tally outbox.py keeps, and the orders it queued (a commit without them counts the run's rows)
            from portal.sync.models import BackfillTally
        except ImportError:
            BackfillTally = None
        if BackfillTally is not None:
            from portal.contact import KLAVIYO_DROPPED_DOMAINS

            mine = [row for row in outbox_rows if row["backfill_run_id"] == run.id]
            sent = [row for row in mine if row["status"] == "sent"]
            db.session.add(BackfillTally(
                run_id=run.id, sent=len(sent), failed=sum(row["status"] == "failed" for row in mine),
                sent_dropped=sum(row["profile_key"].rsplit("@", 1)[-1] in KLAVIYO_DROPPED_DOMAINS for row in sent),
                orders_sent=len({row["order_id"] for row in sent})))
            run.orders_queued = len({row["order_id"] for row in mine})
        db.session.commit()
        if db.engine.dialect.name == "postgresql":
            # Planner statistics and the visibility map, as autovacuum keeps them for rows written weeks ago.
            with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("VACUUM ANALYZE")
        return organizer.id


def restamp(app, organizer_id: int, orders: int) -> None:
    """The on-sale is going on now: the rows of the 40 orders before the pending ones were sent in the last
    minute (seeding took longer than that)."""
    from sqlalchemy import update

    from portal.extensions import db
    from portal.sync.models import OutboxEvent

    with app.app_context():
        now = datetime.now(timezone.utc)
        for k, order_id in enumerate(range(orders - 60, orders - 20)):
            db.session.execute(update(OutboxEvent).where(OutboxEvent.order_id == order_id,
                                                         OutboxEvent.status == "sent")
                               .values(sent_at=now - timedelta(seconds=40 - k)))
        db.session.commit()


def login(app):
    client = app.test_client()
    html = client.get("/auth/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html).group(1)
    assert client.post("/auth/login", data={"csrf_token": token, "email": EMAIL,
                                            "password": PASSWORD}).status_code == 303
    return client


def measure(app, requests: int) -> dict:
    from sqlalchemy import event as sa_event

    from portal.extensions import db

    client = login(app)
    statements = []
    with app.app_context():
        engine = db.engine
    sa_event.listen(engine, "before_cursor_execute", lambda *a, **k: statements.append(1))
    results = {}
    for name, url, htmx in CASES:
        headers = HX if htmx else {}
        first = client.get(url, headers=headers)  # warm-up: templates compiled, caches filled
        if first.status_code != 200:
            results[name] = {"status": first.status_code}
            continue
        times, cpu, counts, size = [], [], [], 0
        for _ in range(requests):
            statements.clear()
            started, started_cpu = time.perf_counter(), time.process_time()
            response = client.get(url, headers=headers)
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


def explain(app, label: str) -> None:
    """Each case's statements with their query plans, slowest first (to stderr)."""
    from sqlalchemy import event as sa_event

    from portal.extensions import db

    client = login(app)
    seen = []

    def before(conn, cursor, statement, parameters, context, executemany):
        context._bench_started = time.perf_counter()

    def after(conn, cursor, statement, parameters, context, executemany):
        seen.append((time.perf_counter() - context._bench_started, statement, parameters))

    with app.app_context():
        engine = db.engine
    sa_event.listen(engine, "before_cursor_execute", before)
    sa_event.listen(engine, "after_cursor_execute", after)
    for name, url, htmx in CASES:
        client.get(url, headers=HX if htmx else {})
        seen.clear()
        client.get(url, headers=HX if htmx else {})
        print(f"\n===== {name} ({label}): {len(seen)} statements, {sum(s for s, _, _ in seen) * 1000:.1f} ms",
              file=sys.stderr)
        with app.app_context():
            raw = db.engine.raw_connection()
            try:
                for seconds, statement, parameters in sorted(seen, key=lambda s: -s[0])[:8]:
                    print(f"--- {seconds * 1000:.2f} ms: {' '.join(statement.split())[:300]}", file=sys.stderr)
                    if not statement.lstrip().upper().startswith("SELECT"):
                        continue
                    cursor = raw.cursor()
                    again = time.perf_counter()
                    cursor.execute(statement, parameters)
                    cursor.fetchall()
                    print(f"    (again, with its rows fetched: {(time.perf_counter() - again) * 1000:.2f} ms)",
                          file=sys.stderr)
                    prefix = "EXPLAIN QUERY PLAN " if engine.dialect.name == "sqlite" else "EXPLAIN ANALYZE "
                    cursor.execute(prefix + statement, parameters)
                    for row in cursor.fetchall():
                        print("    " + " ".join(str(c) for c in row), file=sys.stderr)
                    cursor.close()
            finally:
                raw.rollback()
                raw.close()


def profile(app, name: str, requests: int, label: str) -> None:
    from pyinstrument import Profiler

    url, htmx = next((u, h) for n, u, h in CASES if n == name)
    client = login(app)
    client.get(url, headers=HX if htmx else {})
    profiler = Profiler(interval=0.0005)
    profiler.start()
    for _ in range(requests):
        client.get(url, headers=HX if htmx else {})
    profiler.stop()
    out = Path("/tmp/bench-profiles")
    out.mkdir(exist_ok=True)
    path = out / f"pages-{re.sub(r'[^a-z]+', '-', name).strip('-')}-{label}.txt"
    path.write_text(profiler.output_text(unicode=False, color=False, show_all=False))
    print(f"profile of {requests} x {name}: {path}", file=sys.stderr)


def run_here(args) -> dict:
    from cryptography.fernet import Fernet
    from flask_migrate import upgrade

    from devtools.processes import RedisServer
    from portal import create_app
    from portal.extensions import db

    tmp = Path(tempfile.mkdtemp(prefix="bench-pages-"))
    redis = RedisServer(tmp / "redis").start()  # the rate-limit meter of View Details reads Redis
    database_url = args.database_url or f"sqlite:///{tmp / 'portal.db'}"
    if database_url.startswith("postgresql"):
        fresh_postgres_database(database_url)
    app = create_app({"SECRET_KEY": "bench-secret-key-" + "x" * 32, "SQLALCHEMY_DATABASE_URI": database_url,
                      "TOKEN_ENCRYPTION_KEY": Fernet.generate_key().decode(),
                      "REDIS_URL": redis.url, "SESSION_COOKIE_SECURE": False,
                      "PUBLIC_BASE_URL": "http://localhost", "KLAVIYO_CLIENT_ID": "bench-client-id",
                      "KLAVIYO_CLIENT_SECRET": "bench-client-secret"})
    label = "postgresql" if database_url.startswith("postgresql") else "sqlite"
    try:
        with app.app_context():
            upgrade(directory=str(ROOT / "migrations"))
        started = time.time()
        organizer_id = seed(app, args.orders, min(args.backfilled, args.orders))
        seeded = time.time() - started
        restamp(app, organizer_id, args.orders)
        if args.explain:
            explain(app, label)
        if args.profile:
            profile(app, args.profile, args.requests, label)
        quiet = wait_for_quiet()
        restamp(app, organizer_id, args.orders)
        results = measure(app, args.requests)
        return {"seconds_to_seed": round(seeded, 1), "results": results, "quiet": quiet}
    finally:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()
        redis.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def run_commit(rev: str, args) -> dict:
    """The same measurement on another commit (bench.harness.run_on_commit)."""
    return run_on_commit("bench.pages", rev, ["--orders", str(args.orders), "--backfilled", str(args.backfilled),
                                              "--requests", str(args.baseline_requests)], args.database_url)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=10_000)
    parser.add_argument("--backfilled", type=int, default=2_000,
                        help="the first orders were sent by a finished history backfill (default 2,000)")
    parser.add_argument("--requests", type=int, default=100, help="timed requests per case")
    parser.add_argument("--compare", default="HEAD",
                        help="commit to measure side by side (default: HEAD, the last commit), or none")
    parser.add_argument("--baseline-requests", type=int, default=100, help="timed requests per case on the other commit")
    parser.add_argument("--database-url", help="default: SQLite in a temp dir")
    parser.add_argument("--profile", metavar="CASE", help="pyinstrument over --requests requests of this case")
    parser.add_argument("--explain", action="store_true", help="print each case's slowest statements and plans")
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
    print(f"=== integrations pages: {args.orders:,} orders (≈ {round(args.orders * 4.25):,} outbox rows), {label}, "
          f"{args.requests} timed requests per case (seeded in {here['seconds_to_seed']} s; {here['quiet']})")
    other = None
    if args.compare != "none":
        sha = subprocess.run(["git", "rev-parse", "--short", args.compare], cwd=ROOT, check=True,
                             capture_output=True, text=True).stdout.strip()
        print(f"... and on {sha} ({args.baseline_requests} timed requests per case)", flush=True)
        other = run_commit(args.compare, args)
        print(f"    ({other['quiet']})")
    width = max(len(name) for name, _, _ in CASES)

    def cells(result: dict | None) -> str:
        if result is None or "p50" not in result:
            return f"{'HTTP ' + str((result or {}).get('status', '?')):>24}  {'':>5}  {'':>4}  {'':>4}"
        return (f"{result['p50']:>11.1f} / {result['p95']:>8.1f}  {result['cpu']:>5.1f}  {result['statements']:>4}"
                f"  {result['kb']:>4}")

    # cpu: this process's CPU time per request (p50), which the other sessions sharing the machine do not inflate.
    header = f"{'case':<{width}}  {'this tree: p50 / p95 ms':>24}  {'cpu':>5}  {'SQL':>4}  {'KB':>4}"
    if other:
        header += f"   {sha + ': p50 / p95 ms':>24}  {'cpu':>5}  {'SQL':>4}  {'KB':>4}"
    print(header)
    for name, _, _ in CASES:
        line = f"{name:<{width}}  {cells(here['results'][name])}"
        if other:
            line += f"   {cells(other['results'].get(name))}"
        print(line)
    details = [here["results"][n]["p50"] for n in ("view details", "view details (htmx panel)",
                                                   "live queue (polls 2 s)") if "p50" in here["results"][n]]
    print(f"target: View Details and its live queue p50 <= 15 ms at 10,000 orders; worst p50 here "
          f"{max(details):.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
