"""View Details at any outbox size (issue 14): its queue figures come from a tally and from index ranges, never from
every row the organizer ever sent; the tally stays right through every status change, a row accepted twice
included; the migration fills the tally from the rows already sent, and goes back down."""
import re
from datetime import timedelta

from sqlalchemy import event as sa_event, select, text

from portal.extensions import db
from portal.integrations import service
from portal.klaviyo.client import ApiResponse
from portal.sync import backfill, outbox
from portal.sync.models import BackfillRun, KlaviyoConnection, OutboxEvent, OutboxTally
from portal.types import utcnow

QUEUE = "/manage/integrations/klaviyo/queue"
HTMX = {"HX-Request": "true"}
ACCEPTED = ApiResponse(202, {}, None, 12)
REJECTED = ApiResponse(400, {}, None, 12, errors=[{"detail": "profile email is not a valid e-mail address"}])


def _connect(organizer_id: int) -> None:
    """The row the OAuth callback writes (nothing here reaches Klaviyo)."""
    db.session.add(KlaviyoConnection(organizer_id=organizer_id, status="connected", scope="events:write",
                                     connected_at=utcnow(), connected_by="Ada Events <ada@organizer.example>"))
    db.session.commit()


def _rows(organizer_id: int, n: int, start: int = 0, **values) -> None:
    now = utcnow()
    db.session.add_all([OutboxEvent(organizer_id=organizer_id, metric="Placed Order", unique_id=f"u{start + i}",
                                    profile_key=f"p{start + i}@fans.example", payload="{}", status="pending",
                                    next_attempt_at=now - timedelta(seconds=1), created_at=now, **values)
                        for i in range(n)])
    db.session.commit()


def queue_counts(page: str) -> dict:
    return {name: float(n) if "." in n else int(n) for n, name in re.findall(
        r"<b>([\d.]+)</b><span>(accepted by Klaviyo|on the way|held until you reconnect|failed|"
        r"sent per second, last minute)</span>", page)}


def test_the_queue_figures_stay_right_as_rows_change_status(app, client, organizer):
    with app.app_context():
        _connect(organizer)
        _rows(organizer, 12)
        first = outbox.claim(organizer, 10, 30)
        outbox.record(first[:8], ACCEPTED, "bulk")  # a bulk request: one UPDATE for its rows
        outbox.record(first[8:9], ACCEPTED, "single")
        outbox.record(first[9:10], REJECTED, "single")
    page = client.get(QUEUE, headers=HTMX).get_data(as_text=True)
    assert queue_counts(page) == {"accepted by Klaviyo": 9, "on the way": 2, "held until you reconnect": 0,
                                  "failed": 1, "sent per second, last minute": 0.1}
    assert "profile email is not a valid e-mail address" in page  # the last problem

    with app.app_context():
        # A worker whose lease ran out answers late for rows another worker has sent meanwhile: Klaviyo deduplicates
        # them by unique_id, and they are counted once.
        outbox.record(first[:8], ACCEPTED, "bulk")
        outbox.record(first[8:9], ACCEPTED, "single")
        assert service.queue_stats(organizer)["sent"] == 9
        # A person's Retry, then the connection needs reconnecting, then Reconnect.
        failed = db.session.scalars(select(OutboxEvent).where(OutboxEvent.status == "failed")).all()
        assert all(outbox.retry(row) for row in failed)
        db.session.commit()
        outbox.hold(organizer, "held: reconnect")
        db.session.commit()
        assert (service.queue_stats(organizer)["held"], service.queue_stats(organizer)["pending"]) == (3, 0)
        outbox.resume(organizer)
        db.session.commit()
        rest = outbox.claim(organizer, 10, 30)
        assert len(rest) == 3
        outbox.record(rest, ACCEPTED, "bulk")
        stats = service.queue_stats(organizer)
        assert (stats["sent"], stats["pending"], stats["failed"], stats["held"]) == (12, 0, 0, 0)
        assert stats["last_error"] is None  # the accepted retry cleared it
        assert db.session.scalar(select(OutboxTally.sent).where(OutboxTally.organizer_id == organizer)) == 12
        # Disconnect cancels what waits; the sent rows stay counted.
        _rows(organizer, 2, start=100)
        outbox.cancel(organizer, "cancelled: disconnected")
        db.session.commit()
        stats = service.queue_stats(organizer)
        assert (stats["sent"], stats["pending"], stats["cancelled"]) == (12, 0, 2)
    page = client.get("/manage/integrations/klaviyo").get_data(as_text=True)
    assert queue_counts(page)["accepted by Klaviyo"] == 12


def test_each_organizers_figures_are_its_own(app, make_organizer):
    with app.app_context():
        ada, bo = make_organizer(), make_organizer(email="bo@organizer.example", name="Bo")
        for organizer_id in (ada, bo):
            _connect(organizer_id)
        _rows(ada, 3)
        _rows(bo, 2, start=10)
        outbox.record(outbox.claim(ada, 10, 30), ACCEPTED, "bulk")
        outbox.record(outbox.claim(bo, 1, 30), ACCEPTED, "single")
        assert (service.queue_stats(ada)["sent"], service.queue_stats(bo)["sent"]) == (3, 1)
        assert (service.queue_stats(ada)["pending"], service.queue_stats(bo)["pending"]) == (0, 1)


def _statements_of(app, client, url, headers=None) -> list[tuple[str, object]]:
    seen = []
    with app.app_context():
        engine = db.engine

    def before(conn, cursor, statement, parameters, context, executemany):
        seen.append((statement, parameters))

    sa_event.listen(engine, "before_cursor_execute", before)
    try:
        assert client.get(url, headers=headers or {}).status_code == 200
    finally:
        sa_event.remove(engine, "before_cursor_execute", before)
    return seen


def _plans(app, statements) -> list[str]:
    """The query plan of each statement that reads outbox_events (PostgreSQL: with sequential scans off, so
    that an index the query can use shows even on these small tables)."""
    out = []
    with app.app_context():
        with db.engine.connect() as conn:
            raw = conn.connection.driver_connection
            postgres = conn.dialect.name == "postgresql"
            cursor = raw.cursor()
            if postgres:
                cursor.execute("SET enable_seqscan = off")
            for statement, parameters in statements:
                if "outbox_events" not in statement or not statement.lstrip().upper().startswith("SELECT"):
                    continue
                cursor.execute(("EXPLAIN " if postgres else "EXPLAIN QUERY PLAN ") + statement, parameters)
                plan = " | ".join(str(row[-1]) for row in cursor.fetchall())
                out.append(f"{' '.join(statement.split())}\n    {plan}")
            if postgres:
                cursor.execute("RESET enable_seqscan")
            cursor.close()
    return out


def test_the_live_queue_reads_no_row_it_does_not_count(app, client, organizer):
    """Every statement of the live queue (polled every 2 s) is a lookup or a range of an index narrower than "all
    of this organizer's rows": the statuses not sent, the last minute of sent_at, the rows with an error."""
    with app.app_context():
        _connect(organizer)
        _rows(organizer, 30)
        outbox.record(outbox.claim(organizer, 30, 30), ACCEPTED, "bulk")
        _rows(organizer, 3, start=100)
    statements = _statements_of(app, client, QUEUE, HTMX)
    plans = _plans(app, statements)
    assert plans
    for plan in plans:
        assert "ix_outbox_org_status" in plan or "ix_outbox_org_error" in plan or "outbox_events_pkey" in plan, plan
        # The old ones: every row of the organizer, GROUP BY status; newest first until one has an error.
        assert not re.search(r"outbox_events USING (COVERING )?INDEX ix_outbox_org_status \(organizer_id=\?\)", plan), plan
        assert "Seq Scan on outbox_events" not in plan and "SCAN outbox_events" not in plan, plan
    # The checklist and a finished run's progress are not worked out for a fragment that shows neither.
    assert not any("orders.is_test" in statement for statement, _ in statements)
    assert len(statements) <= 10


def test_a_backfill_runs_progress_reads_no_row_of_the_run(app, client, organizer):
    """Its figures are the run's tally (tests/test_backfill_tally.py), not counts of its rows."""
    with app.app_context():
        _connect(organizer)
        run = BackfillRun(organizer_id=organizer, status="done", total_orders=3, processed_orders=3,
                          events_planned=3, events_queued=3)
        db.session.add(run)
        db.session.commit()
        _rows(organizer, 3, backfill=True, backfill_run_id=run.id)
        outbox.record(outbox.claim(organizer, 2, 30), ACCEPTED, "bulk")
        _rows(organizer, 2, start=50)  # live rows are not in the run's index
        progress = backfill.progress(run)
        assert (progress["sent"], progress["total"], progress["sent_dropped"]) == (2, 3, 0)
        statements = []

        def before(conn, cursor, statement, parameters, context, executemany):
            statements.append((statement, parameters))

        sa_event.listen(db.engine, "before_cursor_execute", before)
        try:
            backfill.progress(run)
        finally:
            sa_event.remove(db.engine, "before_cursor_execute", before)
    assert statements and not any("outbox_events" in statement for statement, _ in statements)


def test_the_migration_fills_the_tally_and_goes_back_down(tmp_path, redis_server, sandbox):
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
        upgrade(directory=migrations, revision="n15orderlimit")
        with db.engine.begin() as conn:
            for n in (1, 2):
                conn.execute(text("INSERT INTO organizers (id, name, email, password_hash, created_at, "
                                  "session_generation) VALUES (:n, 'O', :email, 'x', '2026-01-01 00:00:00', 0)"),
                             {"n": n, "email": f"o{n}@organizer.example"})
            for i, (organizer_id, status) in enumerate([(1, "sent")] * 3 + [(1, "failed"), (2, "sent"),
                                                                              (2, "pending")]):
                conn.execute(text("INSERT INTO outbox_events (organizer_id, metric, kind, unique_id, profile_key, "
                                  "payload, backfill, status, attempts, next_attempt_at, created_at) VALUES (:o, "
                                  "'Placed Order', 'event', :u, 'p@x.example', '{}', false, :s, 1, "
                                  "'2026-01-01 00:00:00', '2026-01-01 00:00:00')"),
                             {"o": organizer_id, "u": f"u{i}", "s": status})
        upgrade(directory=migrations)
        with db.engine.connect() as conn:
            assert conn.execute(text("SELECT organizer_id, sent FROM outbox_tallies ORDER BY organizer_id")
                                ).all() == [(1, 3), (2, 1)]
            indexes = {row[1] for row in conn.execute(text("PRAGMA index_list('outbox_events')"))}
        assert {"ix_outbox_org_error", "ix_outbox_run"} <= indexes
        assert "ix_outbox_events_backfill_run_id" not in indexes
        downgrade(directory=migrations, revision="n15orderlimit")
        with db.engine.connect() as conn:
            indexes = {row[1] for row in conn.execute(text("PRAGMA index_list('outbox_events')"))}
            tables = {row[0] for row in conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'table'"))}
            assert conn.execute(text("SELECT count(*) FROM outbox_events")).scalar() == 6
        assert "ix_outbox_events_backfill_run_id" in indexes and "ix_outbox_org_error" not in indexes
        assert "ix_outbox_run" not in indexes and "outbox_tallies" not in tables
        db.engine.dispose()


def test_the_schema_has_the_migrations_indexes(app):
    """The database the tests run on (SQLite or PostgreSQL, migrated by conftest) has what the migration made."""
    with app.app_context():
        with db.engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                found = dict(conn.execute(text("SELECT indexname, indexdef FROM pg_indexes "
                                               "WHERE tablename = 'outbox_events'")).all())
            else:
                found = dict(conn.execute(text("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND "
                                               "tbl_name = 'outbox_events'")).all())
    assert "last_error IS NOT NULL" in found["ix_outbox_org_error"]
    assert "backfill_run_id IS NOT NULL" in found["ix_outbox_run"]
    assert "ix_outbox_events_backfill_run_id" not in found


def test_test_orders_are_found_without_reading_the_real_ones(app, make_organizer, make_event):
    """The install checklist and the read-back sweep look for test orders through an index of test orders alone:
    during an on-sale there are tens of thousands of real orders to skip otherwise."""
    from sqlalchemy import select as select_, true as true_

    from portal.orders.models import Order
    from portal.types import utcnow

    organizer = make_organizer()
    make_event(organizer)
    queries = [select_(Order.id).where(Order.organizer_id == organizer, Order.is_test == true_())
               .order_by(Order.id.desc()).limit(1),
               select_(Order.id).where(Order.is_test == true_(), Order.placed_at >= utcnow())]
    with app.app_context():
        with db.engine.connect() as conn:
            for query in queries:
                compiled = query.compile(conn, compile_kwargs={"literal_binds": True})
                if conn.dialect.name == "postgresql":
                    conn.execute(text("SET enable_seqscan = off"))
                    plan = "\n".join(r[0] for r in conn.execute(text(f"EXPLAIN {compiled}")))
                else:
                    plan = "\n".join(str(r[-1]) for r in conn.execute(text(f"EXPLAIN QUERY PLAN {compiled}")))
                assert "ix_orders_test_" in plan, plan
