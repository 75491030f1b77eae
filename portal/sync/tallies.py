"""Counters kept beside the outbox's states, so pages read a figure instead of counting rows: how many of an
organizer's rows Klaviyo has accepted (OutboxTally, View Details), and what each history backfill run's rows became
(BackfillTally, its progress). portal/sync/outbox.py calls these in the same transaction as the status change they
count, just before the UPDATE that makes it."""
from sqlalchemy import case, func, literal, not_, or_, select, true, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from portal.contact import KLAVIYO_DROPPED_DOMAINS
from portal.extensions import db
from portal.sync.models import FAILED, SENT, BackfillRun, BackfillTally, OutboxEvent, OutboxTally


def sent(rows) -> None:
    """Claimed rows Klaviyo accepted, about to be turned to sent: counted for their organizer and their runs."""
    _organizers_sent(rows)
    _runs_sent(rows)


def run_failed(run_id: int, failed: int) -> None:
    """This many of the run's rows were turned to failed."""
    add_to_runs(select(literal(run_id), literal(0), literal(0), literal(failed), literal(0)).where(true()))


def run_retried(row_id: int) -> None:
    """A person retries a failed row of a run: one failed fewer, if it is still failed (locked: two people
    retrying it at once count it once)."""
    still_failed = (select(OutboxEvent.backfill_run_id)
                    .where(OutboxEvent.id == row_id, OutboxEvent.status == FAILED,
                           OutboxEvent.backfill_run_id.is_not(None))
                    .with_for_update().subquery())
    add_to_runs(select(still_failed.c.backfill_run_id, literal(0), literal(0), -func.count(), literal(0))
                .where(true()).group_by(still_failed.c.backfill_run_id))


def order_left_run(run_id: int, order_id: int) -> None:
    """A row of this order moved to another run: if the run has no other row of the order, one order fewer."""
    others = select(OutboxEvent.id).where(OutboxEvent.backfill_run_id == run_id,
                                          OutboxEvent.order_id == order_id).exists()
    db.session.execute(update(BackfillRun).where(BackfillRun.id == run_id, not_(others))
                       .values(orders_queued=BackfillRun.orders_queued - 1),
                       execution_options={"synchronize_session": False})


def _organizers_sent(rows) -> None:
    """Add the rows about to be turned to sent to their organizer's tally (OutboxTally, the "accepted by Klaviyo"
    of View Details), in the transaction that turns them, just before the UPDATE that does. Only rows not sent
    already: a row whose lease ran out may be accepted twice (by its first worker, late, and by the one that took
    it over). The count and the increment are one statement; PostgreSQL locks the rows it counts (FOR UPDATE, and
    a row another transaction is sending is counted once that one has committed, if it is still not sent), and
    SQLite takes its write lock before reading any of them, so two workers never both count the same row."""
    upsert = pg_insert if db.session.get_bind().dialect.name == "postgresql" else sqlite_insert
    for organizer_id in sorted({row.organizer_id for row in rows}):
        ids = [row.id for row in rows if row.organizer_id == organizer_id]
        not_sent = (select(OutboxEvent.id).where(OutboxEvent.id.in_(ids), OutboxEvent.status != SENT)
                    .with_for_update().subquery())
        # "WHERE true": SQLite reads an INSERT ... SELECT's ON CONFLICT as part of the SELECT's join otherwise.
        counted = select(literal(organizer_id), func.count()).select_from(not_sent).where(true())
        statement = upsert(OutboxTally).from_select(["organizer_id", "sent"], counted)
        db.session.execute(statement.on_conflict_do_update(
            index_elements=[OutboxTally.organizer_id], set_={"sent": OutboxTally.sent + statement.excluded.sent}))


def dropped_address(profile_key=OutboxEvent.profile_key):
    """An address Klaviyo accepts events for, then drops (test domains): sending it again changes nothing."""
    return or_(*(profile_key.like(f"%@{domain}") for domain in KLAVIYO_DROPPED_DOMAINS))


TALLIED = ("sent", "sent_dropped", "failed", "orders_sent")


def add_to_runs(counted) -> None:
    """Add `counted` (rows of run_id and the four figures of TALLIED) to those runs' BackfillTally rows."""
    upsert = pg_insert if db.session.get_bind().dialect.name == "postgresql" else sqlite_insert
    statement = upsert(BackfillTally).from_select(["run_id", *TALLIED], counted)
    db.session.execute(statement.on_conflict_do_update(
        index_elements=[BackfillTally.run_id],
        set_={name: getattr(BackfillTally, name) + getattr(statement.excluded, name) for name in TALLIED}))


def _runs_sent(rows) -> None:
    """The rows of backfill runs about to be turned to sent, added to their runs' tallies (BackfillTally), right
    after _organizers_sent and before the UPDATE that turns them, in one statement: how many (only rows not sent
    already, as in _organizers_sent), how many of those to addresses Klaviyo drops, how many were failed (a late
    acceptance of a row failed meanwhile: one failed fewer), and how many of their orders had no row of the run
    sent yet. Nothing at all for a request without a backfill row (the live sync's).

    The rows are locked by _organizers_sent's statement, and so is the organizer's OutboxTally row, until commit: any
    other transaction turning rows of this organizer to sent has committed before this statement began (so it sees
    them, PostgreSQL reading each statement's own snapshot) or waits for this one, and no order is counted twice.
    Which run a row belongs to is read from the row itself."""
    if not any(row.backfill_run_id is not None for row in rows):
        return
    row, other = OutboxEvent.__table__.alias("row"), OutboxEvent.__table__.alias("other")
    order_had_one_sent = (select(other.c.id).where(other.c.backfill_run_id == row.c.backfill_run_id,
                                                   other.c.status == SENT, other.c.order_id == row.c.order_id)
                          .exists())
    counted = (
        select(row.c.backfill_run_id, func.count(),
               func.coalesce(func.sum(case((dropped_address(row.c.profile_key), 1), else_=0)), 0),
               -func.coalesce(func.sum(case((row.c.status == FAILED, 1), else_=0)), 0),
               func.count(case((not_(order_had_one_sent), row.c.order_id)).distinct()))
        .where(row.c.id.in_([claimed.id for claimed in rows]), row.c.status != SENT,
               row.c.backfill_run_id.is_not(None))
        .group_by(row.c.backfill_run_id))
    add_to_runs(counted)
