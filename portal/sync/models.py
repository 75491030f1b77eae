"""What the sync keeps: the Klaviyo connection, the outbox (one row per event to send, written in the same
transaction as its order), its delivery attempts, and history backfill runs."""
from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.extensions import db
from portal.types import UTCDateTime, utcnow

PENDING = "pending"  # waiting to be sent (maybe not before next_attempt_at)
CLAIMED = "claimed"  # taken by a worker, leased until claimed_until
SENT = "sent"  # accepted by Klaviyo (202)
FAILED = "failed"  # rejected for good, or out of retries; a person can retry it
HELD = "held"  # the connection needs reconnecting; resumes by itself afterwards
CANCELLED = "cancelled"  # never to be sent (disconnected)
ACTIVE_STATUSES = (PENDING, CLAIMED, HELD)
# What an outbox row sends: an event (Create Event / Bulk Create), or a list subscription (Bulk Subscribe
# Profiles, portal/sync/subscriptions.py). Both kinds share the states, the retry policy and the hard stop.
EVENT = "event"
SUBSCRIPTION = "subscription"

# The Klaviyo connection's states.
CONNECTED = "connected"
NEEDS_RECONNECT = "needs_reconnect"
DISCONNECTED = "disconnected"


class KlaviyoConnection(db.Model):
    """One row per organizer. Tokens are stored encrypted (see portal.crypto) and never leave this row in clear."""

    __tablename__ = "klaviyo_connections"

    id: Mapped[int] = mapped_column(primary_key=True)
    organizer_id: Mapped[int] = mapped_column(ForeignKey("organizers.id"), unique=True)
    status: Mapped[str] = mapped_column(String(20), default=DISCONNECTED)
    status_reason: Mapped[str | None] = mapped_column(Text)
    access_token_enc: Mapped[str | None] = mapped_column(Text)
    refresh_token_enc: Mapped[str | None] = mapped_column(Text)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    scope: Mapped[str] = mapped_column(String(500), default="")
    # Features the organizer turned on that need more of Klaviyo than sending events ("subscriptions", "flows").
    features: Mapped[str] = mapped_column(String(200), default="")
    # The Klaviyo account, cached from GET /api/accounts.
    account_id: Mapped[str | None] = mapped_column(String(64))
    organization_name: Mapped[str | None] = mapped_column(String(200))
    public_api_key: Mapped[str | None] = mapped_column(String(16))
    account_timezone: Mapped[str | None] = mapped_column(String(64))
    account_currency: Mapped[str | None] = mapped_column(String(8))
    account_fetched_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    connected_by: Mapped[str | None] = mapped_column(String(200))
    connected_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    disconnected_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # A refresh token whose revoke call failed on the network; the worker retries it.
    revoke_pending_enc: Mapped[str | None] = mapped_column(Text)

    @property
    def is_active(self) -> bool:
        return self.status == CONNECTED

    @property
    def scopes(self) -> list[str]:
        return self.scope.split()

    @property
    def feature_list(self) -> list[str]:
        return self.features.split()



class OutboxEvent(db.Model):
    __tablename__ = "outbox_events"
    __table_args__ = (
        UniqueConstraint("organizer_id", "unique_id"),
        Index("ix_outbox_due", "status", "next_attempt_at"),
        Index("ix_outbox_org_status", "organizer_id", "status", "sent_at"),
        # View Details' "last problem": the organizer's newest row with an error, without walking every row it
        # ever sent (only rows with an error are in it).
        Index("ix_outbox_org_error", "organizer_id", "id", sqlite_where=text("last_error IS NOT NULL"),
              postgresql_where=text("last_error IS NOT NULL")),
        # A backfill run's rows, with what its progress counts (index-only); live rows (no run) are not in it.
        Index("ix_outbox_run", "backfill_run_id", "status", "order_id", "profile_key",
              sqlite_where=text("backfill_run_id IS NOT NULL"), postgresql_where=text("backfill_run_id IS NOT NULL")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    organizer_id: Mapped[int] = mapped_column(ForeignKey("organizers.id"))
    order_id: Mapped[int | None] = mapped_column(ForeignKey("orders.id"), index=True)
    metric: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(16), default=EVENT, server_default=EVENT)  # EVENT | SUBSCRIPTION
    unique_id: Mapped[str] = mapped_column(String(255))
    profile_key: Mapped[str] = mapped_column(String(254))
    payload: Mapped[str] = mapped_column(Text)  # the exact JSON:API body of Create Event
    backfill: Mapped[bool] = mapped_column(default=False)
    backfill_run_id: Mapped[int | None] = mapped_column(ForeignKey("backfill_runs.id"))  # ix_outbox_run
    status: Mapped[str] = mapped_column(String(12), default=PENDING)
    status_detail: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Automatic retries stop here (about 3 days after the first try); a person's Retry moves it on.
    give_up_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    claim_token: Mapped[str | None] = mapped_column(String(36), index=True)
    last_http_status: Mapped[int | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    last_error_pointer: Mapped[str | None] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    attempts_log: Mapped[list["DeliveryAttempt"]] = relationship(
        order_by="DeliveryAttempt.id", cascade="all, delete-orphan", back_populates="outbox_event"
    )


class OutboxTally(db.Model):
    """How many outbox rows of an organizer Klaviyo has accepted (status sent), for View Details, which would
    otherwise count every row ever sent. outbox.record adds the rows it turns to sent, in the transaction that
    does it; a sent row never changes status again and no row is deleted, so nothing ever takes one away."""

    __tablename__ = "outbox_tallies"

    organizer_id: Mapped[int] = mapped_column(ForeignKey("organizers.id"), primary_key=True, autoincrement=False)
    sent: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class DeliveryAttempt(db.Model):
    """One try at sending one outbox row, as shown on the order's sync timeline."""

    __tablename__ = "delivery_attempts"

    id: Mapped[int] = mapped_column(primary_key=True)
    outbox_id: Mapped[int] = mapped_column(ForeignKey("outbox_events.id"), index=True)
    attempted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    outcome: Mapped[str] = mapped_column(String(20))  # accepted | retry | failed | held | cancelled
    http_status: Mapped[int | None]
    detail: Mapped[str | None] = mapped_column(Text)
    latency_ms: Mapped[int | None]
    via: Mapped[str] = mapped_column(String(8), default="single")  # single | bulk

    outbox_event: Mapped[OutboxEvent] = relationship(back_populates="attempts_log")


class BackfillRun(db.Model):
    """Sending an organizer's past orders to Klaviyo (with backfill: true, so no flows fire)."""

    __tablename__ = "backfill_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    organizer_id: Mapped[int] = mapped_column(ForeignKey("organizers.id"), index=True)
    status: Mapped[str] = mapped_column(String(12), default="running")  # running | cancelled | done
    total_orders: Mapped[int] = mapped_column(default=0)
    processed_orders: Mapped[int] = mapped_column(default=0)
    events_planned: Mapped[int] = mapped_column(default=0)  # from the dry run, for the progress bar
    events_queued: Mapped[int] = mapped_column(default=0)
    events_skipped: Mapped[int] = mapped_column(default=0)
    # Orders at least one of whose events (or subscription) this run queued: the chunk that queues them counts them
    # (a later run taking a cancelled row over takes the order off, see outbox.requeue_as_past).
    orders_queued: Mapped[int] = mapped_column(default=0, server_default="0")
    last_order_id: Mapped[int] = mapped_column(default=0)  # the cursor: orders up to here are done
    max_order_id: Mapped[int] = mapped_column(default=0)  # orders placed after the run started are live ones
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class BackfillTally(db.Model):
    """What a backfill run's rows have become, for its progress, which would otherwise read every row of the run:
    how many Klaviyo accepted (and how many of those go to addresses it drops), how many orders have one accepted,
    how many are failed now. outbox.py keeps it in the transaction that changes a run row's status (accepted,
    failed, retried by a person); live rows (no run) never touch it. A table of its own, not columns of
    backfill_runs: the job queuing a chunk holds that row for the whole chunk, and the workers must not wait."""

    __tablename__ = "backfill_tallies"

    run_id: Mapped[int] = mapped_column(ForeignKey("backfill_runs.id"), primary_key=True, autoincrement=False)
    sent: Mapped[int] = mapped_column(default=0, server_default="0")
    sent_dropped: Mapped[int] = mapped_column(default=0, server_default="0")
    failed: Mapped[int] = mapped_column(default=0, server_default="0")
    orders_sent: Mapped[int] = mapped_column(default=0, server_default="0")
