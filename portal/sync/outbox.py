"""The outbox's states: every status change of an outbox row, and its delivery-attempt bookkeeping.

    pending --claim--> claimed --record--> sent | pending (retry later) | failed
    pending/claimed --hold--> held --resume--> pending          (Needs reconnect, then Reconnect)
    pending/claimed/held --cancel--> cancelled                 (Disconnect, a stopped backfill)
    failed --retry--> pending                                  (a person asked to try again)

Rows are written in the order's own transaction; everything else here is the worker's or a person's
action, each one a single guarded UPDATE, so two workers or a worker and a Disconnect never both win.
"""
import json
import logging
import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import func, insert, select, update

from portal.extensions import db
from portal.klaviyo.client import ApiResponse
from portal.klaviyo.payloads import OutgoingEvent
from portal.sync import tallies
from portal.sync.models import (
    CANCELLED,
    CLAIMED,
    CONNECTED,
    EVENT,
    FAILED,
    HELD,
    NEEDS_RECONNECT,
    PENDING,
    SENT,
    DeliveryAttempt,
    KlaviyoConnection,
    OutboxEvent,
)
from portal.types import utcnow

log = logging.getLogger("portal.sync")
_QUIET = {"synchronize_session": False}


def _payload(body: dict) -> str:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


# RETURNING makes it one multi-row INSERT on PostgreSQL as well (else psycopg sends one INSERT per row).
_INSERT_ROWS = insert(OutboxEvent.__table__).returning(OutboxEvent.__table__.c.id)


def add_rows(organizer_id: int, order_id: int | None, events: list[OutgoingEvent],
             connection: KlaviyoConnection | None, backfill: bool = False, kind: str = EVENT,
             backfill_run_id: int | None = None) -> int:
    """Queue the events (or, with kind=SUBSCRIPTION, list subscriptions) in the current transaction, if the
    organizer is connected to Klaviyo. Returns how many rows were queued.

    A connection that needs reconnecting still gets its rows, held until the organizer reconnects.
    Without a connection nothing is queued: Klaviyo only hears of orders placed while connected.
    One INSERT for all the rows (nothing reads them back here), after the session's pending changes.
    """
    if not events or connection is None or connection.status not in (CONNECTED, NEEDS_RECONNECT):
        return 0
    status = PENDING if connection.status == CONNECTED else HELD
    now = utcnow()
    db.session.flush()  # the order (or run) the rows point at is written first
    db.session.execute(_INSERT_ROWS, [
        {"organizer_id": organizer_id, "order_id": order_id, "metric": event.metric, "unique_id": event.unique_id,
         "profile_key": event.profile_key, "payload": _payload(event.body), "status": status, "backfill": backfill,
         "backfill_run_id": backfill_run_id, "next_attempt_at": now, "created_at": now, "kind": kind, "attempts": 0}
        for event in events
    ])
    return len(events)


# --- the worker's claim -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Claimed:
    """A claimed row as plain data, so the worker never reloads it from the database mid-send."""

    id: int
    organizer_id: int
    metric: str
    unique_id: str
    payload: str
    attempts: int
    give_up_at: datetime | None
    backfill: bool
    claim_token: str
    backfill_run_id: int | None = None  # a history backfill's row: its run's tally (BackfillTally) follows it


def claim(organizer_id: int, limit: int, lease_seconds: int, kind: str = EVENT) -> list[Claimed]:
    """Take up to `limit` due rows of one kind for this organizer, so no other worker sends them meanwhile.

    PostgreSQL: the due rows are locked with FOR UPDATE SKIP LOCKED, so concurrent workers take
    different rows without waiting. SQLite: one writer at a time, and the UPDATE only takes rows still
    pending, so a row can never be claimed twice.
    """
    now = utcnow()
    token = uuid.uuid4().hex
    due = (
        select(OutboxEvent.id)
        .where(OutboxEvent.organizer_id == organizer_id, OutboxEvent.status == PENDING,
               OutboxEvent.next_attempt_at <= now, OutboxEvent.kind == kind)
        .order_by(OutboxEvent.backfill, OutboxEvent.id)  # live purchases go before a history backfill
        .limit(limit)
    )
    if db.session.get_bind().dialect.name == "postgresql":
        # Lock the ids first, then update them: inside one UPDATE, PostgreSQL may re-run a SKIP LOCKED
        # subquery and so take more rows than the LIMIT.
        chosen = list(db.session.scalars(due.with_for_update(skip_locked=True)))
        target = OutboxEvent.id.in_(chosen)
    else:
        target = OutboxEvent.id.in_(due.scalar_subquery())
    db.session.execute(
        update(OutboxEvent)
        .where(target, OutboxEvent.status == PENDING)
        .values(status=CLAIMED, claim_token=token, claimed_until=now + timedelta(seconds=lease_seconds)),
        execution_options=_QUIET,
    )
    db.session.commit()
    columns = [getattr(OutboxEvent, name) for name in Claimed.__dataclass_fields__]
    rows = db.session.execute(select(*columns).where(OutboxEvent.claim_token == token).order_by(OutboxEvent.id))
    return [Claimed(*row) for row in rows]


def release(rows: list[Claimed], wait_seconds: float = 1.0, detail: str | None = None) -> None:
    """Give claimed rows back, untouched, to be tried again in `wait_seconds` (e.g. a rate-limit wait).
    Only rows still claimed by us: a Disconnect may have cancelled them meanwhile."""
    if not rows:
        return
    values = {"status": PENDING, "claim_token": None, "claimed_until": None,
              "next_attempt_at": utcnow() + timedelta(seconds=wait_seconds)}
    if detail:
        values["status_detail"] = detail
    db.session.execute(
        update(OutboxEvent)
        .where(OutboxEvent.id.in_([row.id for row in rows]), OutboxEvent.status == CLAIMED,
               OutboxEvent.claim_token.in_({row.claim_token for row in rows}))
        .values(**values),
        execution_options=_QUIET,
    )
    db.session.commit()


def renew_claims(tokens: list[str], lease_seconds: float) -> int:
    """The worker that holds these claims is alive and still sending: push their lease on (the heartbeat of
    portal/sync/lease.py). Only rows still claimed under these tokens; rows another statement has locked
    meanwhile (on PostgreSQL) are skipped, not waited for: that statement is finishing them anyway."""
    mine = (select(OutboxEvent.id).where(OutboxEvent.claim_token.in_(tokens), OutboxEvent.status == CLAIMED)
            .with_for_update(skip_locked=True))
    renewed = db.session.execute(
        update(OutboxEvent)
        .where(OutboxEvent.id.in_(mine.scalar_subquery()), OutboxEvent.status == CLAIMED)
        .values(claimed_until=utcnow() + timedelta(seconds=lease_seconds)),
        execution_options=_QUIET,
    ).rowcount
    db.session.commit()
    return renewed


def reclaim_expired() -> list[int]:
    """Put rows whose worker died mid-send (lease expired) back to pending. Returns their organizers."""
    now = utcnow()
    stale = list(db.session.execute(
        select(OutboxEvent.id, OutboxEvent.organizer_id).where(OutboxEvent.status == CLAIMED,
                                                               OutboxEvent.claimed_until < now)
    ))
    if stale:
        db.session.execute(
            update(OutboxEvent)
            .where(OutboxEvent.id.in_([row.id for row in stale]), OutboxEvent.status == CLAIMED,
                   OutboxEvent.claimed_until < now)
            .values(status=PENDING, claim_token=None, claimed_until=None, next_attempt_at=now),
            execution_options=_QUIET,
        )
        db.session.commit()
    return sorted({row.organizer_id for row in stale})


def organizers_with_due_rows() -> list[int]:
    return list(db.session.scalars(
        select(OutboxEvent.organizer_id).where(OutboxEvent.status == PENDING,
                                               OutboxEvent.next_attempt_at <= utcnow()).distinct()
    ))


def next_due_at() -> datetime | None:
    """When the sweeper next has something to do, or None: a waiting row falls due (after a Retry-After, a
    backoff, a rate-limit wait) or a claim's lease runs out (its worker may have died). The worker sweeps at that
    moment rather than at its next regular sweep (worker.py)."""
    now = utcnow()
    due = db.session.scalar(select(func.min(OutboxEvent.next_attempt_at))
                            .where(OutboxEvent.status == PENDING, OutboxEvent.next_attempt_at > now))
    lease_ends = db.session.scalar(select(func.min(OutboxEvent.claimed_until))
                                   .where(OutboxEvent.status == CLAIMED, OutboxEvent.claimed_until > now))
    return min((moment for moment in (due, lease_ends) if moment is not None), default=None)


# --- what Klaviyo answered ------------------------------------------------------------------------------

def _backoff(attempts: int) -> float:
    base = current_app.config.get("RETRY_BASE_SECONDS", 2)
    return min(base * 2 ** max(attempts - 1, 0), 6 * 3600) * random.uniform(0.75, 1.25)


def record(rows: list[Claimed], response: ApiResponse, via: str) -> None:
    """Write down what happened to each row, and decide whether and when it is tried again."""
    now = utcnow()
    status = response.status
    if response.accepted and len(rows) > 1:
        _record_accepted(rows, response, via, now)
        return
    if response.accepted:
        tallies.sent(rows)
    failed_in_run: dict[int, int] = {}
    for row in rows:
        attempts = row.attempts + 1
        values = {"attempts": attempts, "last_http_status": status or None, "claim_token": None, "claimed_until": None}
        if response.accepted:
            outcome = "accepted"
            values.update(status=SENT, sent_at=now, status_detail=None, last_error=None, last_error_pointer=None)
        elif status == 429:
            outcome = "retry"
            wait = (response.retry_after or 1) + random.uniform(0.1, 1.0)
            values.update(status=PENDING, next_attempt_at=now + timedelta(seconds=wait),
                          last_error=f"Rate limited by Klaviyo; retrying after {response.retry_after or 1} s.",
                          status_detail="rate limited")
        elif status == 0 or status >= 500 or status == 408:
            give_up_at = row.give_up_at or (now + timedelta(seconds=current_app.config["OUTBOX_RETRY_HORIZON_SECONDS"]))
            values["give_up_at"] = give_up_at
            values["last_error"] = response.error_text()
            if now >= give_up_at:
                outcome = "failed"
                values.update(status=FAILED, status_detail="failed: Klaviyo kept failing for 3 days")
            else:
                outcome = "retry"
                values.update(status=PENDING, next_attempt_at=now + timedelta(seconds=_backoff(attempts)),
                              status_detail="retrying")
        else:
            outcome = "failed"
            values.update(status=FAILED, last_error=response.error_text(), last_error_pointer=response.error_pointer(),
                          status_detail="failed: Klaviyo rejected this event")
        # Klaviyo's acceptance is the truth even if a Disconnect cancelled the row while it was in flight;
        # any other outcome only counts while the row is still ours.
        guard = OutboxEvent.id == row.id if response.accepted else OutboxEvent.claim_token == row.claim_token
        changed = db.session.execute(update(OutboxEvent).where(OutboxEvent.id == row.id, guard).values(**values),
                                     execution_options=_QUIET).rowcount
        if outcome == "failed" and changed and row.backfill_run_id is not None:
            # Claimed a moment ago and still ours (the guard), so it was not failed before: one more failed.
            failed_in_run[row.backfill_run_id] = failed_in_run.get(row.backfill_run_id, 0) + 1
        db.session.add(DeliveryAttempt(outbox_id=row.id, attempted_at=now, outcome=outcome, http_status=status or None,
                                       detail=None if response.accepted else response.error_text()[:2000],
                                       latency_ms=response.latency_ms, via=via))
        log.info(json.dumps({"msg": "klaviyo.send", "organizer": row.organizer_id, "metric": row.metric,
                             "unique_id": row.unique_id, "status": status, "outcome": outcome,
                             "latency_ms": response.latency_ms, "via": via}))
    for run_id, failed in sorted(failed_in_run.items()):
        tallies.run_failed(run_id, failed)
    db.session.commit()
    if response.accepted:
        _mark_success(rows[0].organizer_id, now)


def _record_accepted(rows: list[Claimed], response: ApiResponse, via: str, now) -> None:
    """A whole request accepted: one UPDATE for its rows and one multi-row INSERT of attempts."""
    tallies.sent(rows)
    db.session.execute(
        update(OutboxEvent).where(OutboxEvent.id.in_([row.id for row in rows]))
        .values(attempts=OutboxEvent.attempts + 1, last_http_status=response.status, claim_token=None,
                claimed_until=None, status=SENT, sent_at=now, status_detail=None, last_error=None,
                last_error_pointer=None),
        execution_options=_QUIET)
    db.session.execute(insert(DeliveryAttempt), [
        {"outbox_id": row.id, "attempted_at": now, "outcome": "accepted", "http_status": response.status,
         "detail": None, "latency_ms": response.latency_ms, "via": via} for row in rows])
    db.session.commit()
    _mark_success(rows[0].organizer_id, now)
    # One line per request (a bulk request is one send): its metrics, and its first and last unique_id.
    metrics: dict[str, int] = {}
    for row in rows:
        metrics[row.metric] = metrics.get(row.metric, 0) + 1
    log.info(json.dumps({"msg": "klaviyo.send", "organizer": rows[0].organizer_id, "metrics": metrics,
                         "events": len(rows), "first_unique_id": rows[0].unique_id,
                         "last_unique_id": rows[-1].unique_id, "status": response.status, "outcome": "accepted",
                         "latency_ms": response.latency_ms, "via": via}))


def _mark_success(organizer_id: int, now) -> None:
    # A transaction of its own: holding the connection row while updating outbox rows would take the
    # locks in the opposite order to Disconnect, and PostgreSQL would find a deadlock.
    db.session.execute(update(KlaviyoConnection).where(KlaviyoConnection.organizer_id == organizer_id)
                       .values(last_success_at=now))
    db.session.commit()


# --- a person's Retry, and history backfill runs ---------------------------------------------------------

def retry(row: OutboxEvent) -> bool:
    """A person asked to try a failed event again: it gets a fresh 3-day retry window. The caller commits.
    False when the row is not failed (nothing to retry)."""
    if row.status != FAILED:
        return False
    if row.backfill_run_id is not None:
        tallies.run_retried(row.id)  # before the row's own change, which the session writes later
    row.status, row.status_detail = PENDING, "retry requested"
    row.next_attempt_at = utcnow()
    row.give_up_at = None
    return True


def cancel_run(run_id: int, detail: str) -> None:
    """A stopped backfill: its not-yet-sent rows leave the queue (resume_run puts them back). The caller commits."""
    db.session.execute(
        update(OutboxEvent).where(OutboxEvent.backfill_run_id == run_id, OutboxEvent.status == PENDING)
        .values(status=CANCELLED, status_detail=detail))


def resume_run(run_id: int) -> None:
    """A resumed backfill: the rows cancel_run took out go back in the queue. The caller commits."""
    db.session.execute(
        update(OutboxEvent).where(OutboxEvent.backfill_run_id == run_id, OutboxEvent.status == CANCELLED)
        .values(status=PENDING, status_detail=None, next_attempt_at=utcnow()))


def requeue_as_past(organizer_id: int, event: OutgoingEvent, run_id: int) -> int:
    """A row a Disconnect cancelled, so never sent, goes out again as a past event of a backfill run.
    Returns how many rows (0 or 1). The caller commits.

    A cancelled row counts in no run's tally; if it was an earlier (stopped) run's, and that run has no other row
    of its order, that run now has one order queued fewer."""
    earlier = db.session.execute(select(OutboxEvent.backfill_run_id, OutboxEvent.order_id).where(
        OutboxEvent.organizer_id == organizer_id, OutboxEvent.unique_id == event.unique_id,
        OutboxEvent.status == CANCELLED, OutboxEvent.backfill_run_id.is_not(None),
        OutboxEvent.backfill_run_id != run_id)).first()
    moved = db.session.execute(
        update(OutboxEvent).where(OutboxEvent.organizer_id == organizer_id, OutboxEvent.unique_id == event.unique_id,
                                  OutboxEvent.status == CANCELLED)
        .values(status=PENDING, backfill=True, backfill_run_id=run_id, next_attempt_at=utcnow(),
                payload=_payload(event.body), status_detail=None, give_up_at=None),
        execution_options=_QUIET).rowcount
    if moved and earlier is not None and earlier.order_id is not None:
        tallies.order_left_run(earlier.backfill_run_id, earlier.order_id)
    return moved


# --- a connection's turns (Needs reconnect, Reconnect, Disconnect), for all rows or for one kind -----------
# A subscription can wait for something events never need (a list to be chosen, the list permission), while
# the events go on: with kind=SUBSCRIPTION these act on those rows alone. The caller commits.

def _of(organizer_id: int, kind: str | None, *statuses: str):
    rows = [OutboxEvent.organizer_id == organizer_id, OutboxEvent.status.in_(statuses)]
    return rows if kind is None else [*rows, OutboxEvent.kind == kind]


def hold(organizer_id: int, detail: str, kind: str | None = None) -> None:
    """Hold (never drop) what waits to go (of one kind, when given), until the organizer reconnects or, for list
    subscriptions, a list is chosen again."""
    db.session.execute(update(OutboxEvent).where(*_of(organizer_id, kind, PENDING, CLAIMED))
                       .values(status=HELD, claim_token=None, claimed_until=None, status_detail=detail),
                       execution_options=_QUIET)


def resume(organizer_id: int, kind: str | None = None) -> int:
    """The held rows (of one kind, when given) flow again, keeping their original time: what held them is fixed
    (a Reconnect, a list chosen). Returns how many."""
    return db.session.execute(update(OutboxEvent).where(*_of(organizer_id, kind, HELD))
                              .values(status=PENDING, next_attempt_at=utcnow(), status_detail=None),
                              execution_options=_QUIET).rowcount


def cancel(organizer_id: int, detail: str, kind: str | None = None) -> None:
    """Nothing more (of one kind, when given) goes out: waiting, claimed and held rows are cancelled (a Disconnect;
    list subscriptions turned off)."""
    db.session.execute(update(OutboxEvent).where(*_of(organizer_id, kind, PENDING, CLAIMED, HELD))
                       .values(status=CANCELLED, status_detail=detail, claim_token=None, claimed_until=None),
                       execution_options=_QUIET)


def note_attempts(rows: list[Claimed], response: ApiResponse, outcome: str, via: str) -> None:
    """Write down tries that changed no state themselves (Klaviyo refused, and hold() holds the rows), so
    the sync timeline shows Klaviyo's answer. The caller commits."""
    now = utcnow()
    for row in rows:
        db.session.add(DeliveryAttempt(outbox_id=row.id, attempted_at=now, outcome=outcome,
                                       http_status=response.status or None, detail=response.error_text()[:2000],
                                       latency_ms=response.latency_ms, via=via))
    db.session.execute(update(OutboxEvent).where(OutboxEvent.id.in_([row.id for row in rows]))
                       .values(attempts=OutboxEvent.attempts + 1, last_http_status=response.status or None,
                               last_error=response.error_text(), last_error_pointer=response.error_pointer()),
                       execution_options=_QUIET)
