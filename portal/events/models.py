"""Events, their ticket types and discount codes."""
import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.extensions import db
from portal.types import Money, UTCDateTime, utcnow


class Event(db.Model):
    __tablename__ = "events"

    id: Mapped[int] = mapped_column(primary_key=True)
    organizer_id: Mapped[int] = mapped_column(ForeignKey("organizers.id"), index=True)
    public_id: Mapped[str] = mapped_column(String(36), unique=True, default=lambda: uuid.uuid4().hex[:12])
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    venue: Mapped[str] = mapped_column(String(200))
    timezone: Mapped[str] = mapped_column(String(64))
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime)
    currency: Mapped[str] = mapped_column(String(3))
    # Where the event is: phone numbers typed without a country code are read as this country's.
    country: Mapped[str] = mapped_column(String(2), default="US")
    # At most this many orders (not cancelled) per e-mail address; None: no limit.
    max_orders_per_email: Mapped[int | None] = mapped_column()
    status: Mapped[str] = mapped_column(String(16), default="draft")
    went_live_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Widget customization
    accent_color: Mapped[str] = mapped_column(String(7), default="#4f46e5")
    button_label: Mapped[str] = mapped_column(String(40), default="Get tickets")
    show_description: Mapped[bool] = mapped_column(default=True)
    preview_opened_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    ticket_types: Mapped[list["TicketType"]] = relationship(
        back_populates="event", order_by="TicketType.id", cascade="all, delete-orphan"
    )
    discount_codes: Mapped[list["DiscountCode"]] = relationship(
        back_populates="event", order_by="DiscountCode.id", cascade="all, delete-orphan"
    )

    @property
    def is_live(self) -> bool:
        return self.status == "live"

    @property
    def is_cancelled(self) -> bool:
        return self.status == "cancelled"


class TicketType(db.Model):
    __tablename__ = "ticket_types"

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id"), index=True)
    name: Mapped[str] = mapped_column(String(120))
    price: Mapped[Decimal] = mapped_column(Money)
    fee: Mapped[Decimal] = mapped_column(Money, default=Decimal("0"))
    capacity: Mapped[int]
    sold: Mapped[int] = mapped_column(default=0)

    event: Mapped[Event] = relationship(back_populates="ticket_types")

    @property
    def remaining(self) -> int:
        return max(self.capacity - self.sold, 0)


class DiscountCode(db.Model):
    __tablename__ = "discount_codes"
    __table_args__ = (UniqueConstraint("event_id", "code"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id"), index=True)
    code: Mapped[str] = mapped_column(String(40))
    kind: Mapped[str] = mapped_column(String(8))  # "fixed" (per ticket) or "percent"
    amount: Mapped[Decimal] = mapped_column(Money)

    event: Mapped[Event] = relationship(back_populates="discount_codes")


class EventChange(db.Model):
    """A live event's new time or venue, and who changed it: each holder of a valid ticket is told once."""

    __tablename__ = "event_changes"

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id"), index=True)
    old_starts_at: Mapped[datetime] = mapped_column(UTCDateTime)
    new_starts_at: Mapped[datetime] = mapped_column(UTCDateTime)
    old_ends_at: Mapped[datetime] = mapped_column(UTCDateTime)
    new_ends_at: Mapped[datetime] = mapped_column(UTCDateTime)
    old_venue: Mapped[str] = mapped_column(String(200))
    new_venue: Mapped[str] = mapped_column(String(200))
    changed_by: Mapped[str] = mapped_column(String(200))
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    people_told: Mapped[int] = mapped_column(default=0)
