"""What the portal learns about its Klaviyo connection's health: whether Klaviyo really kept a test order's events
(read back with Get Events), the incidents the organizer is alerted about, and the double-send guard's last look at
the account's metrics."""
from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from portal.extensions import db
from portal.types import UTCDateTime, utcnow

# An event check's states.
WAITING = "waiting"  # accepted by Klaviyo, not found yet: looked for again until the window ends
STORED = "stored"  # found in Klaviyo (Get Events), on a profile
DROPPED = "dropped"  # not there: Klaviyo accepted it and dropped it

# An incident's kinds, and its mails' states.
NEEDS_RECONNECT = "needs_reconnect"
FAILING = "failing"  # events failed, or held for longer than ALERT_HELD_MINUTES
MAIL_PENDING, MAIL_SENDING, MAIL_SENT, MAIL_OFF = "pending", "sending", "sent", "off"

# The double-send guard's results.
GUARD_PENDING, GUARD_CLEAR, GUARD_FOUND, GUARD_NO_PERMISSION, GUARD_FAILED = (
    "pending", "clear", "found", "no_permission", "failed")


class EventCheck(db.Model):
    """Did Klaviyo keep this accepted event? One row per outbox row of a test order, once it is read back."""

    __tablename__ = "klaviyo_event_checks"
    __table_args__ = (Index("ix_event_checks_due", "state", "next_look_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    outbox_id: Mapped[int] = mapped_column(ForeignKey("outbox_events.id"), unique=True)
    organizer_id: Mapped[int] = mapped_column(ForeignKey("organizers.id"), index=True)
    state: Mapped[str] = mapped_column(String(12), default=WAITING)
    reason: Mapped[str | None] = mapped_column(Text)  # why Klaviyo likely dropped it
    profile_id: Mapped[str | None] = mapped_column(String(64))  # the Klaviyo profile it is on
    klaviyo_event_id: Mapped[str | None] = mapped_column(String(64))
    metric_id: Mapped[str | None] = mapped_column(String(64))
    looks: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_look_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    next_look_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Looking stops here: an event still missing then is taken as dropped.
    give_up_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Incident(db.Model):
    """A time the Klaviyo connection broke (Needs reconnect) or events stopped going out (failed, or held too
    long): when, why, how many events it held, and when it recovered. At most one is open per organizer."""

    __tablename__ = "klaviyo_incidents"
    __table_args__ = (UniqueConstraint("open_for", name="uq_incidents_open_for"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    organizer_id: Mapped[int] = mapped_column(ForeignKey("organizers.id"), index=True)
    # The organizer's id while the incident is open, NULL once resolved: the unique constraint allows one open.
    open_for: Mapped[int | None] = mapped_column()
    kind: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str] = mapped_column(Text, default="")
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    resolution: Mapped[str | None] = mapped_column(Text)
    held_most: Mapped[int] = mapped_column(default=0)  # the most events held at once meanwhile
    failed_most: Mapped[int] = mapped_column(default=0)
    mail_to: Mapped[str | None] = mapped_column(String(254))
    opened_mail: Mapped[str] = mapped_column(String(10), default=MAIL_PENDING)
    opened_mail_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    resolved_mail: Mapped[str | None] = mapped_column(String(10))
    resolved_mail_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    mail_error: Mapped[str | None] = mapped_column(Text)

    @property
    def is_open(self) -> bool:
        return self.resolved_at is None


class MetricGuard(db.Model):
    """The double-send guard: is Placed Order also sent to this Klaviyo account by another integration?"""

    __tablename__ = "klaviyo_metric_guards"

    id: Mapped[int] = mapped_column(primary_key=True)
    organizer_id: Mapped[int] = mapped_column(ForeignKey("organizers.id"), unique=True)
    status: Mapped[str] = mapped_column(String(16), default=GUARD_PENDING)
    others: Mapped[str] = mapped_column(Text, default="[]")  # JSON: [{"name", "key", "category", "metric_id"}]
    detail: Mapped[str | None] = mapped_column(Text)
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
