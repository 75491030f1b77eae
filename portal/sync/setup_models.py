"""What the portal remembers of the flows and segments it creates in an organizer's Klaviyo ("Set up flows and
segments"): one row per recipe the organizer asked for, so that adding it again never makes a second one."""
import json
from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from portal.extensions import db
from portal.types import UTCDateTime, utcnow

NEEDS_PERMISSION = "needs_permission"  # waits for the organizer to grant flows:write & co. (Reconnect)
QUEUED = "queued"  # waits for a worker (maybe not before next_attempt_at: a rate limit, a retry)
WORKING = "working"  # a worker is creating it
CREATED = "created"  # in Klaviyo, as a draft (klaviyo_id); also when it was found there already
FAILED = "failed"  # Klaviyo refused it, or could not be reached for long; a person can retry
CANCELLED = "cancelled"  # disconnected before it was made
PENDING = (NEEDS_PERMISSION, QUEUED, WORKING)


class SetupItem(db.Model):
    __tablename__ = "klaviyo_setup_items"
    __table_args__ = (
        UniqueConstraint("organizer_id", "key"),
        Index("ix_setup_due", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    organizer_id: Mapped[int] = mapped_column(ForeignKey("organizers.id"), index=True)
    key: Mapped[str] = mapped_column(String(80))  # a recipe, or "event_segment:<event id>"
    kind: Mapped[str] = mapped_column(String(10))  # flow | segment
    name: Mapped[str] = mapped_column(String(255))  # its name in Klaviyo
    options_json: Mapped[str] = mapped_column(Text, default="{}")  # what the organizer chose (VIP text, amount...)
    status: Mapped[str] = mapped_column(String(20), default=QUEUED)
    detail: Mapped[str | None] = mapped_column(Text)  # why it waits, or why it failed
    klaviyo_id: Mapped[str | None] = mapped_column(String(64))
    account_id: Mapped[str | None] = mapped_column(String(64))  # the Klaviyo account it was made in
    found_existing: Mapped[bool] = mapped_column(default=False)  # it was in Klaviyo already: nothing was made
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    @property
    def options(self) -> dict:
        return json.loads(self.options_json or "{}")
