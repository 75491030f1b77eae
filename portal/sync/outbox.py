"""Writing outbox rows (in the order's transaction) and claiming them (atomically, in the worker)."""
import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update

from portal.extensions import db
from portal.integrations.models import CONNECTED, NEEDS_RECONNECT, KlaviyoConnection
from portal.klaviyo.payloads import OutgoingEvent
from portal.sync.models import CLAIMED, HELD, PENDING, OutboxEvent
from portal.types import utcnow


def add_rows(organizer_id: int, order_id: int | None, events: list[OutgoingEvent],
             connection: KlaviyoConnection | None, backfill: bool = False) -> list[OutboxEvent]:
    """Queue the events in the current transaction, if the organizer is connected to Klaviyo.

    A connection that needs reconnecting still gets its rows, held until the organizer reconnects.
    Without a connection nothing is queued: Klaviyo only hears of orders placed while connected.
    """
    if connection is None or connection.status not in (CONNECTED, NEEDS_RECONNECT):
        return []
    status = PENDING if connection.status == CONNECTED else HELD
    rows = [
        OutboxEvent(
            organizer_id=organizer_id, order_id=order_id, metric=event.metric, unique_id=event.unique_id,
            profile_key=event.profile_key, payload=json.dumps(event.body, separators=(",", ":"), ensure_ascii=False),
            status=status, backfill=backfill, next_attempt_at=utcnow(),
        )
        for event in events
    ]
    db.session.add_all(rows)
    return rows


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


def claim(organizer_id: int, limit: int, lease_seconds: int) -> list[Claimed]:
    """Take up to `limit` due rows for this organizer, so no other worker sends them meanwhile.

    PostgreSQL: the due rows are locked with FOR UPDATE SKIP LOCKED, so concurrent workers take
    different rows without waiting. SQLite: one writer at a time, and the UPDATE only takes rows still
    pending, so a row can never be claimed twice.
    """
    now = utcnow()
    token = uuid.uuid4().hex
    due = (
        select(OutboxEvent.id)
        .where(OutboxEvent.organizer_id == organizer_id, OutboxEvent.status == PENDING,
               OutboxEvent.next_attempt_at <= now)
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
        execution_options={"synchronize_session": False},
    )
    db.session.commit()
    columns = [getattr(OutboxEvent, name) for name in Claimed.__dataclass_fields__]
    rows = db.session.execute(select(*columns).where(OutboxEvent.claim_token == token).order_by(OutboxEvent.id))
    return [Claimed(*row) for row in rows]


def release(rows: list[Claimed], not_before, detail: str | None = None) -> None:
    """Give claimed rows back, untouched, to be tried again after `not_before` (e.g. a rate-limit wait).
    Only rows still claimed by us: a Disconnect may have cancelled them meanwhile."""
    if not rows:
        return
    values = {"status": PENDING, "claim_token": None, "claimed_until": None, "next_attempt_at": not_before}
    if detail:
        values["status_detail"] = detail
    db.session.execute(
        update(OutboxEvent)
        .where(OutboxEvent.id.in_([row.id for row in rows]), OutboxEvent.status == CLAIMED,
               OutboxEvent.claim_token.in_({row.claim_token for row in rows}))
        .values(**values),
        execution_options={"synchronize_session": False},
    )
    db.session.commit()


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
            execution_options={"synchronize_session": False},
        )
        db.session.commit()
    return sorted({row.organizer_id for row in stale})


def organizers_with_due_rows() -> list[int]:
    return list(db.session.scalars(
        select(OutboxEvent.organizer_id).where(OutboxEvent.status == PENDING,
                                               OutboxEvent.next_attempt_at <= utcnow()).distinct()
    ))
