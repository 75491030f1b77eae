"""Sending past orders to Klaviyo: a dry run first, then a resumable, cancellable run.

Past events go out with backfill: true, so Klaviyo records them without firing flows (no confirmation
mails for last year's orders). Every event keeps its deterministic unique_id, so nothing Klaviyo
already has is sent again, and a run that is stopped and resumed picks up where it left off.
"""
import math
from dataclasses import dataclass
from itertools import groupby

from sqlalchemy import case, func, or_, select
from sqlalchemy.orm import selectinload

from portal.extensions import db
from portal.klaviyo.lifecycle import CANCELLED_ORDER, REFUNDED_ORDER
from portal.klaviyo.payloads import METRICS, REGISTERED, as_past_event, build_order_events, registration_reasons
from portal.orders.lifecycle import history_events
from portal.orders.models import CANCELLED as ORDER_CANCELLED, Attendee, Order, Refund, Ticket
from portal.orders.service import snapshot
from portal.sync import outbox, tallies
from portal.sync.backfill_consent import queue_past_subscriptions
from portal.sync.connection import connection_for
from portal.sync.limiter import KLAVIYO_LIMITS
from portal.sync.models import CANCELLED, SENT, BackfillRun, BackfillTally, OutboxEvent
from portal.sync.queue import enqueue_delivery, queue
from portal.types import utcnow

CHUNK_ORDERS = 500
# What a backfill sends: an order's own events, and its past cancellation and refunds. (Event Changed and
# Cancelled Registration are notices for the moment they happen, not history.)
BACKFILLED_METRICS = (*METRICS, CANCELLED_ORDER, REFUNDED_ORDER)
RUNNING, STOPPED, DONE = "running", "cancelled", "done"


@dataclass
class Plan:
    orders: int
    tickets: int
    attendee_events: int
    lifecycle_events: int  # past cancellations and refunds
    events: int
    already_sent: int  # sent, and kept by Klaviyo
    to_send: int
    estimated_seconds: float
    dropped: int = 0  # sent, but for test addresses Klaviyo drops: sending them again changes nothing
    waiting: int = 0  # already queued by the live sync (or held until a reconnect): it sends them
    failed: int = 0  # failed in the live sync: retried from their order, not by a backfill


def estimate_seconds(events: int) -> float:
    """How long Klaviyo's Bulk Create limits let `events` take: 1,000 events a request, 10 requests a
    second for the first minute's 150, then 150 a minute."""
    if events <= 0:
        return 0.0
    burst, steady = KLAVIYO_LIMITS["bulk"]
    requests = math.ceil(events / 1000)
    if requests <= steady:
        return requests / burst
    return steady / burst + (requests - steady) * 60 / steady


def plan(organizer_id: int) -> Plan:
    """The dry run: what a backfill would send, and what Klaviyo has already (by unique_id)."""
    orders = db.session.scalar(select(func.count()).select_from(Order).where(Order.organizer_id == organizer_id))
    tickets = db.session.scalar(select(func.count()).select_from(Ticket).join(Order)
                                .where(Order.organizer_id == organizer_id))
    rows = db.session.execute(
        select(Order.id, Order.email, Attendee.email).join(Ticket, Ticket.order_id == Order.id)
        .join(Attendee, Attendee.ticket_id == Ticket.id).where(Order.organizer_id == organizer_id)
        .order_by(Order.id, Ticket.position))
    attendee_events = 0
    for _, order_rows in groupby(rows, key=lambda row: row[0]):
        order_rows = list(order_rows)
        reasons = registration_reasons(order_rows[0][1], [email for _, _, email in order_rows])
        attendee_events += reasons.count(REGISTERED)
    cancelled = db.session.scalar(select(func.count()).select_from(Order).where(
        Order.organizer_id == organizer_id, Order.status == ORDER_CANCELLED))
    refunds = db.session.scalar(select(func.count()).select_from(Refund).join(Order)
                                .where(Order.organizer_id == organizer_id))
    events = orders + tickets + attendee_events + cancelled + refunds
    # A run never sends an event twice: whatever the outbox has (and a disconnect did not cancel) is skipped.
    existing = skipped_counts(organizer_id)
    to_send = max(events - sum(existing.values()), 0)
    return Plan(orders, tickets, attendee_events, cancelled + refunds, events, existing["kept"], to_send,
                estimate_seconds(to_send), existing["dropped"], existing["waiting"], existing["failed"])


def _dropped_address():
    return tallies.dropped_address(OutboxEvent.profile_key)


def skipped_counts(organizer_id: int, up_to_order: int | None = None, but_run: int | None = None) -> dict:
    """The past orders' events already in the outbox, which a run skips, by why: kept by Klaviyo, sent but dropped
    (test addresses), waiting in the live sync, failed. Only orders up to `up_to_order`, and not `but_run`'s own."""
    why = case((OutboxEvent.status == SENT, case((_dropped_address(), "dropped"), else_="kept")),
               (OutboxEvent.status == "failed", "failed"), else_="waiting").label("why")
    query = select(why, func.count()).where(
        OutboxEvent.organizer_id == organizer_id, OutboxEvent.order_id.is_not(None),
        OutboxEvent.metric.in_(BACKFILLED_METRICS), OutboxEvent.status != CANCELLED)
    if up_to_order is not None:
        query = query.where(OutboxEvent.order_id <= up_to_order)
    if but_run is not None:
        query = query.where(or_(OutboxEvent.backfill_run_id.is_(None), OutboxEvent.backfill_run_id != but_run))
    counts = dict.fromkeys(("kept", "dropped", "waiting", "failed"), 0)
    counts.update(dict(db.session.execute(query.group_by(why)).all()))
    return counts


def current_run(organizer_id: int) -> BackfillRun | None:
    return db.session.scalar(select(BackfillRun).where(BackfillRun.organizer_id == organizer_id)
                             .order_by(BackfillRun.id.desc()).limit(1))


def start(organizer_id: int) -> BackfillRun:
    """Start a run over every order placed until now (later orders are sent live anyway)."""
    the_plan = plan(organizer_id)
    run = BackfillRun(
        organizer_id=organizer_id, status=RUNNING, total_orders=the_plan.orders, events_planned=the_plan.to_send,
        max_order_id=db.session.scalar(select(func.max(Order.id)).where(Order.organizer_id == organizer_id)) or 0,
    )
    db.session.add(run)
    db.session.commit()
    _enqueue(run)
    return run


def resume(run: BackfillRun) -> None:
    """Carry on from the cursor; events this run had queued and cancel() stopped go back in the queue."""
    run.status = RUNNING
    run.finished_at = None
    outbox.resume_run(run.id)
    db.session.commit()
    _enqueue(run)
    enqueue_delivery(run.organizer_id)


def cancel(run: BackfillRun) -> None:
    """Stop queuing, and take this run's not-yet-sent events out of the queue (resume puts them back)."""
    run.status = STOPPED
    outbox.cancel_run(run.id, "cancelled: backfill stopped")
    db.session.commit()


def _enqueue(run: BackfillRun) -> None:
    queue().enqueue("portal.sync.backfill.run_backfill", run.id, result_ttl=0, failure_ttl=24 * 3600,
                    job_timeout=3600)


def run_backfill(run_id: int) -> None:
    """The job: queue past orders' events, a chunk of orders at a time, until done or cancelled."""
    while queue_next_chunk(run_id):
        pass


def queue_next_chunk(run_id: int) -> bool:
    """Queue the events of the next chunk of orders. False when the run is over (or may not go on)."""
    run = db.session.get(BackfillRun, run_id)
    if run is None:
        return False
    db.session.refresh(run)
    if run.status != RUNNING:
        return False
    connection = connection_for(run.organizer_id)
    if connection is None or not connection.is_active:
        return False  # a disconnect ends the run; Reconnect + Resume carries on
    orders = list(db.session.scalars(
        select(Order).options(selectinload(Order.tickets).selectinload(Ticket.attendee), selectinload(Order.event),
                              selectinload(Order.refunds).selectinload(Refund.lines))
        .where(Order.organizer_id == run.organizer_id, Order.id > run.last_order_id, Order.id <= run.max_order_id)
        .order_by(Order.id).limit(CHUNK_ORDERS)))
    if not orders:
        run.status, run.finished_at = DONE, utcnow()
        db.session.commit()
        return False
    queued_for = _queue_chunk(run, connection, orders)
    queued_for |= queue_past_subscriptions(run, connection, orders)  # past consents, as historical subscriptions
    run.last_order_id = orders[-1].id
    run.processed_orders += len(orders)
    run.orders_queued += len(queued_for)  # the chunks' orders never overlap: each order counted once
    db.session.commit()
    enqueue_delivery(run.organizer_id)
    return True


def _queue_chunk(run: BackfillRun, connection, orders: list[Order]) -> set[int]:
    """Queue what these orders have to send; returns the orders that had something."""
    queued_for = set()
    built = {order.id: build_order_events(snapshot(order)).events + history_events(order) for order in orders}
    unique_ids = [event.unique_id for events in built.values() for event in events]
    existing = dict(db.session.execute(
        select(OutboxEvent.unique_id, OutboxEvent.status).where(
            OutboxEvent.organizer_id == run.organizer_id, OutboxEvent.unique_id.in_(unique_ids))).all())
    for order_id, events in built.items():
        fresh = []
        for event in events:
            status = existing.get(event.unique_id)
            if status is None:
                fresh.append(as_past_event(event))
            elif status == CANCELLED:
                # Cancelled by a disconnect, so never sent: send it now, as a past event.
                if outbox.requeue_as_past(run.organizer_id, as_past_event(event), run.id):
                    queued_for.add(order_id)
                run.events_queued += 1
            else:
                run.events_skipped += 1
        if outbox.add_rows(run.organizer_id, order_id, fresh, connection, backfill=True, backfill_run_id=run.id):
            queued_for.add(order_id)
        run.events_queued += len(fresh)
    return queued_for


def progress(run: BackfillRun) -> dict:
    """Counts, rate and time left, for the progress bar: what this run sent (and how much of it Klaviyo drops),
    how many orders had something to send, and what it skipped and why."""
    # One row, whatever the run's size: the run's tally (kept by portal/sync/outbox.py as its rows change status)
    # and the run's own counts (kept by the chunks that queue its rows). No row of the outbox is read.
    tally = db.session.execute(select(BackfillTally.sent, BackfillTally.sent_dropped, BackfillTally.failed,
                                      BackfillTally.orders_sent).where(BackfillTally.run_id == run.id)).first()
    sent, sent_dropped, failed, orders_sent = tally or (0, 0, 0, 0)
    total = max(run.events_planned, run.events_queued, sent, 1)
    elapsed = max(((run.finished_at or utcnow()) - run.started_at).total_seconds(), 0.001)
    rate = sent / elapsed
    remaining = max(total - sent, 0)
    return {
        "sent": sent, "total": total, "queued": run.events_queued, "skipped": run.events_skipped,
        "failed": failed, "percent": min(100, round(100 * sent / total)),
        "rate": round(rate, 1), "seconds_left": round(remaining / rate) if rate > 0 and remaining else None,
        "orders": f"{run.processed_orders} of {run.total_orders}",
        "orders_looked_at": run.processed_orders, "orders_total": run.total_orders,
        "orders_sent": orders_sent, "orders_skipped": max(run.processed_orders - run.orders_queued, 0),
        "sent_dropped": sent_dropped,
        "skipped_why": skipped_counts(run.organizer_id, run.last_order_id, run.id) if run.events_skipped else {},
        "complete": run.status == DONE and remaining == 0,
    }

