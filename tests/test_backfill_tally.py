"""A backfill run's progress at any size (issue 14): its figures come from the run's tally (BackfillTally, kept by
portal/sync/outbox.py as the run's rows change status) and from the run's own counts, never from the run's rows.
Every figure stays what counting the rows says, through every status change; a finished run's progress is one
statement; the migration fills the tallies from the rows already there, and goes back down."""
from datetime import timedelta

from sqlalchemy import event as sa_event, select, text

from portal.contact import KLAVIYO_DROPPED_DOMAINS
from portal.events.models import Event
from portal.extensions import db
from portal.klaviyo.client import ApiResponse
from portal.orders.service import AttendeeInput, OrderInput, place_order
from portal.sync import backfill, outbox
from portal.sync.models import BackfillRun, BackfillTally, KlaviyoConnection, OutboxEvent
from portal.types import utcnow
from tests.conftest import oauth_connect

ACCEPTED = ApiResponse(202, {}, None, 12)
REJECTED = ApiResponse(400, {}, None, 12, errors=[{"detail": "profile email is not a valid e-mail address"}])
FIGURES = ("sent", "sent_dropped", "failed", "orders_sent", "orders_skipped")


def counted(run_id: int) -> dict:
    """The figures as progress() worked them out before the tally: from every row of the run."""
    run = db.session.get(BackfillRun, run_id)
    db.session.refresh(run)
    rows = db.session.execute(select(OutboxEvent.status, OutboxEvent.order_id, OutboxEvent.profile_key)
                              .where(OutboxEvent.backfill_run_id == run_id)).all()
    sent = [row for row in rows if row.status == "sent"]
    return {"sent": len(sent),
            "sent_dropped": sum(row.profile_key.rsplit("@", 1)[-1] in KLAVIYO_DROPPED_DOMAINS for row in sent),
            "failed": sum(row.status == "failed" for row in rows),
            "orders_sent": len({row.order_id for row in sent if row.order_id is not None}),
            "orders_skipped": max(run.processed_orders - len({row.order_id for row in rows
                                                             if row.order_id is not None}), 0)}


def shown(run_id: int) -> dict:
    run = db.session.get(BackfillRun, run_id)
    db.session.refresh(run)
    progress = backfill.progress(run)
    return {name: progress[name] for name in FIGURES}


def assert_right(run_id: int, **expected) -> None:
    figures = shown(run_id)
    assert figures == counted(run_id)
    assert {name: figures[name] for name in expected} == expected


def _orders(app, organizer_id, make_event, n: int) -> list[int]:
    """n orders placed while not connected (so they have no outbox rows), for rows of a run to point at."""
    event_id = make_event(organizer_id)
    with app.app_context():
        event = db.session.get(Event, event_id)
        ticket_type = event.ticket_types[0]
        placed = []
        for i in range(n):
            email = f"pat{i}@buyers.example"
            placed.append(place_order(event, OrderInput(first_name="Pat", last_name=str(i), email=email, phone=None,
                                                        lines=[(ticket_type, AttendeeInput("Pat", str(i), email))])).id)
        return placed


def _connect(organizer_id: int) -> None:
    db.session.add(KlaviyoConnection(organizer_id=organizer_id, status="connected", scope="events:write",
                                     connected_at=utcnow(), connected_by="Ada Events <ada@organizer.example>"))
    db.session.commit()


def _run_rows(organizer_id: int, run: BackfillRun, rows: list[tuple[int, str]], start: int = 0,
              new_orders: bool = True) -> None:
    """Rows of `run`, as (order id, address), queued the way a chunk queues them (counting their orders, unless
    the run has queued for them already)."""
    now = utcnow()
    db.session.add_all([OutboxEvent(organizer_id=organizer_id, order_id=order_id, metric="Placed Order",
                                    unique_id=f"r{run.id}-{start + i}", profile_key=address, payload="{}",
                                    status="pending", backfill=True, backfill_run_id=run.id,
                                    next_attempt_at=now - timedelta(seconds=1), created_at=now)
                        for i, (order_id, address) in enumerate(rows)])
    if new_orders:
        run.processed_orders += len({order_id for order_id, _ in rows})
        run.orders_queued += len({order_id for order_id, _ in rows})
    db.session.commit()


def _claim(organizer_id: int, *unique_ids: str) -> list[outbox.Claimed]:
    """Claim everything due, keep the rows asked for, give the others back at once."""
    claimed = outbox.claim(organizer_id, 100, 30)
    wanted = [row for row in claimed if row.unique_id in unique_ids]
    outbox.release([row for row in claimed if row.unique_id not in unique_ids], wait_seconds=-1)
    assert len(wanted) == len(unique_ids)
    return sorted(wanted, key=lambda row: unique_ids.index(row.unique_id))


def test_the_tally_stays_right_through_every_status_change(app, organizer, make_event):
    a, b, c, d = _orders(app, organizer, make_event, 4)
    with app.app_context():
        _connect(organizer)
        run = BackfillRun(organizer_id=organizer, status="running", total_orders=4)
        db.session.add(run)
        db.session.commit()
        run_id = run.id
        # Order a: three rows, one to an address Klaviyo drops; b: two; c and d: one each.
        _run_rows(organizer, run, [(a, "pat@buyers.example"), (a, "sam@example.com"), (a, "lee@guests.example"),
                                   (b, "kim@buyers.example"), (b, "kim@buyers.example"), (c, "jo@buyers.example"),
                                   (d, "al@buyers.example")])
        assert_right(run_id, sent=0, orders_sent=0, orders_skipped=0)
        u = [f"r{run_id}-{i}" for i in range(7)]
        first = _claim(organizer, u[0], u[1], u[3])
        outbox.record(first, ACCEPTED, "bulk")  # a bulk request: a's two rows and b's first
        assert_right(run_id, sent=3, sent_dropped=1, orders_sent=2)
        single = _claim(organizer, u[2])
        outbox.record(single, ACCEPTED, "single")  # order a again: no order more
        assert_right(run_id, sent=4, sent_dropped=1, orders_sent=2)
        # Accepted twice (a worker whose lease ran out answers late): counted once.
        outbox.record(first, ACCEPTED, "bulk")
        outbox.record(single, ACCEPTED, "single")
        assert_right(run_id, sent=4, sent_dropped=1, orders_sent=2)
        # Rejected: one alone, two in a bulk request; then the same claims answered again, no longer theirs.
        b2 = _claim(organizer, u[4])
        outbox.record(b2, REJECTED, "single")
        cd = _claim(organizer, u[5], u[6])
        outbox.record(cd, REJECTED, "bulk")
        assert_right(run_id, sent=4, failed=3, orders_sent=2)
        outbox.record(b2, REJECTED, "single")
        assert_right(run_id, failed=3)
        # A late acceptance of a row failed meanwhile: sent, one failed fewer, its order sent.
        outbox.record(cd[1:], ACCEPTED, "single")
        assert_right(run_id, sent=5, failed=2, orders_sent=3)
        # A person's Retry (twice: the second finds nothing failed), then Klaviyo accepts it.
        row = db.session.scalar(select(OutboxEvent).where(OutboxEvent.unique_id == u[4]))
        assert outbox.retry(row)
        db.session.commit()
        again = db.session.scalar(select(OutboxEvent).where(OutboxEvent.unique_id == u[4]))
        assert not outbox.retry(again)
        assert_right(run_id, failed=1)
        outbox.record(_claim(organizer, u[4]), ACCEPTED, "single")
        assert_right(run_id, sent=6, failed=1, orders_sent=3)  # b had one sent already
        # The banner's Retry failed (every failed row of the organizer), and a retry that fails again.
        for row in db.session.scalars(select(OutboxEvent).where(OutboxEvent.status == "failed")).all():
            assert outbox.retry(row)
        db.session.commit()
        assert_right(run_id, failed=0)
        outbox.record(_claim(organizer, u[5]), REJECTED, "single")
        assert_right(run_id, sent=6, failed=1, orders_sent=3)
        # Stop and resume: the rows still waiting leave the queue and come back; nothing counted changes.
        _run_rows(organizer, run, [(d, "al@buyers.example")], start=7, new_orders=False)
        outbox.cancel_run(run_id, "cancelled: backfill stopped")
        db.session.commit()
        assert_right(run_id, sent=6, failed=1)
        outbox.resume_run(run_id)
        db.session.commit()
        outbox.record(_claim(organizer, f"r{run_id}-7"), ACCEPTED, "single")
        assert_right(run_id, sent=7, failed=1, orders_sent=3)  # d had one sent already


def test_a_disconnect_and_a_later_run_keep_both_runs_right(app, client, organizer, make_event, sandbox, monkeypatch):
    """Rows a Disconnect cancelled go out again as past events of the next run: they leave the stopped run (and its
    orders with them) for the new one; live rows cancelled the same way join the new run too."""
    from portal.sync import connection as klaviyo, jobs
    from portal.sync.queue import queue

    before = _orders(app, organizer, make_event, 3)
    assert oauth_connect(client, sandbox.url).status_code == 303
    event_id = make_event(organizer)
    with app.app_context():
        event = db.session.get(Event, event_id)
        ticket_type = event.ticket_types[0]
        live = place_order(event, OrderInput(first_name="Kim", last_name="Live", email="kim@example.org", phone=None,
                                             lines=[(ticket_type, AttendeeInput("Kim", "Live", "kim@example.org"))])).id
    assert client.post_form("/manage/integrations/klaviyo/backfill").status_code == 303
    with app.app_context():
        queue().empty()
        first_run = backfill.current_run(organizer).id
        monkeypatch.setattr(backfill, "CHUNK_ORDERS", 2)
        assert backfill.queue_next_chunk(first_run)  # the first two orders
        # Klaviyo accepts one row of the first order, then the organizer stops the run and disconnects.
        one = _claim(organizer, db.session.scalar(select(OutboxEvent.unique_id).where(
            OutboxEvent.backfill_run_id == first_run, OutboxEvent.order_id == before[0]).limit(1)))
        outbox.record(one, ACCEPTED, "single")
        backfill.cancel(db.session.get(BackfillRun, first_run))
        klaviyo.disconnect(klaviyo.connection_for(organizer))
        assert_right(first_run, sent=1, orders_sent=1, orders_skipped=0)
    assert oauth_connect(client, sandbox.url).status_code == 303
    assert client.post_form("/manage/integrations/klaviyo/backfill").status_code == 303
    with app.app_context():
        queue().empty()
        second_run = backfill.current_run(organizer).id
        assert second_run != first_run
        while backfill.queue_next_chunk(second_run):
            pass
        requeued = set(db.session.scalars(select(OutboxEvent.order_id).where(
            OutboxEvent.backfill_run_id == second_run)))
        assert live in requeued and before[1] in requeued  # cancelled rows, taken over as past events
        # The first run kept only its sent row's order; the second has the rest.
        assert_right(first_run, sent=1, orders_sent=1, orders_skipped=1)
        assert db.session.get(BackfillRun, first_run).orders_queued == 1
        assert_right(second_run, sent=0, orders_sent=0)
        assert jobs.deliver(organizer) > 0
        figures = shown(second_run)
        assert figures == counted(second_run)
        assert figures["sent"] > 0 and figures["orders_sent"] == len(requeued)
        assert figures["sent_dropped"] >= 1  # the live order's kim@example.org


def test_a_finished_runs_progress_is_one_statement_at_any_size(app, organizer, make_event):
    orders = _orders(app, organizer, make_event, 6)
    with app.app_context():
        _connect(organizer)
        costs = []
        for size in (1, 6):
            run = BackfillRun(organizer_id=organizer, status="running", total_orders=size)
            db.session.add(run)
            db.session.commit()
            _run_rows(organizer, run, [(order_id, f"p{n}@fans.example") for order_id in orders[:size]
                                       for n in range(4)])
            outbox.record(outbox.claim(organizer, 100, 30), ACCEPTED, "bulk")
            run.status, run.finished_at = backfill.DONE, utcnow()
            db.session.commit()
            db.session.refresh(run)  # the page has the run loaded already (current_run)
            statements = []

            def before(conn, cursor, statement, parameters, context, executemany):
                statements.append(statement)

            sa_event.listen(db.engine, "before_cursor_execute", before)
            try:
                progress = backfill.progress(run)
            finally:
                sa_event.remove(db.engine, "before_cursor_execute", before)
            assert (progress["sent"], progress["orders_sent"], progress["complete"]) == (4 * size, size, True)
            assert not any("outbox_events" in statement for statement in statements), statements
            costs.append(len(statements))
        assert costs == [1, 1]


def test_the_live_sync_never_touches_a_run_tally(app, organizer):
    with app.app_context():
        _connect(organizer)
        now = utcnow()
        db.session.add_all([OutboxEvent(organizer_id=organizer, metric="Placed Order", unique_id=f"live{i}",
                                        profile_key=f"p{i}@fans.example", payload="{}", status="pending",
                                        next_attempt_at=now - timedelta(seconds=1), created_at=now)
                            for i in range(4)])
        db.session.commit()
        statements = []

        def before(conn, cursor, statement, parameters, context, executemany):
            statements.append(statement)

        sa_event.listen(db.engine, "before_cursor_execute", before)
        try:
            claimed = outbox.claim(organizer, 4, 30)
            outbox.record(claimed[:2], ACCEPTED, "bulk")
            outbox.record(claimed[2:3], ACCEPTED, "single")
            outbox.record(claimed[3:], REJECTED, "single")
            row = db.session.scalar(select(OutboxEvent).where(OutboxEvent.status == "failed"))
            assert outbox.retry(row)
            db.session.commit()
        finally:
            sa_event.remove(db.engine, "before_cursor_execute", before)
        assert not any("backfill_tallies" in statement for statement in statements)
        assert db.session.scalar(select(BackfillTally).limit(1)) is None


def test_the_migration_fills_the_run_tallies_and_goes_back_down(tmp_path, redis_server, sandbox):
    from alembic.config import Config
    from alembic.script import ScriptDirectory
    from flask_migrate import downgrade, upgrade

    from portal import create_app
    from tests.conftest import ROOT, base_config

    migrations = str(ROOT / "migrations")
    config = Config()
    config.set_main_option("script_location", migrations)
    assert len(ScriptDirectory.from_config(config).get_heads()) == 1  # one head, whatever comes after

    app = create_app(base_config(f"sqlite:///{tmp_path / 'old.db'}", redis_server.url, sandbox.url))
    with app.app_context():
        upgrade(directory=migrations, revision="o16pages")
        with db.engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA foreign_keys = OFF")  # outbox rows of orders this test does not make
            conn.execute(text("INSERT INTO organizers (id, name, email, password_hash, created_at, "
                              "session_generation) VALUES (1, 'O', 'o1@organizer.example', 'x', "
                              "'2026-01-01 00:00:00', 0)"))
            for run_id in (1, 2, 3):
                conn.execute(text("INSERT INTO backfill_runs (id, organizer_id, status, total_orders, "
                                  "processed_orders, events_planned, events_queued, events_skipped, last_order_id, "
                                  "max_order_id, started_at) VALUES (:r, 1, 'done', 3, 3, 6, 6, 0, 3, 3, "
                                  "'2026-01-01 00:00:00')"), {"r": run_id})
            rows = [(1, 1, "sent", "a@fans.example"), (1, 1, "sent", "b@example.com"), (1, 2, "failed", "c@f.example"),
                    (1, 2, "sent", "d@test.com"), (1, 3, "pending", "e@f.example"), (2, 4, "cancelled", "f@f.example"),
                    (None, 5, "sent", "g@example.com")]
            for i, (run_id, order_id, status, address) in enumerate(rows):
                conn.execute(text("INSERT INTO outbox_events (organizer_id, order_id, metric, kind, unique_id, "
                                  "profile_key, payload, backfill, backfill_run_id, status, attempts, "
                                  "next_attempt_at, created_at) VALUES (1, :order, 'Placed Order', 'event', :u, "
                                  ":p, '{}', true, :run, :s, 1, '2026-01-01 00:00:00', '2026-01-01 00:00:00')"),
                             {"order": order_id, "u": f"u{i}", "p": address, "run": run_id, "s": status})
            conn.commit()
        upgrade(directory=migrations)
        with db.engine.connect() as conn:
            assert conn.execute(text("SELECT run_id, sent, sent_dropped, failed, orders_sent FROM backfill_tallies "
                                     "ORDER BY run_id")).all() == [(1, 3, 2, 1, 2), (2, 0, 0, 0, 0), (3, 0, 0, 0, 0)]
            assert conn.execute(text("SELECT id, orders_queued FROM backfill_runs ORDER BY id")).all() == [
                (1, 3), (2, 1), (3, 0)]
        downgrade(directory=migrations, revision="o16pages")
        with db.engine.connect() as conn:
            tables = {row[0] for row in conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'table'"))}
            columns = {row[1] for row in conn.execute(text("PRAGMA table_info('backfill_runs')"))}
            assert conn.execute(text("SELECT count(*) FROM backfill_runs")).scalar() == 3
        assert "backfill_tallies" not in tables and "orders_queued" not in columns
        db.engine.dispose()
