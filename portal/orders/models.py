"""Orders, the tickets in them and each ticket's attendee."""
import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.extensions import db
from portal.types import Money, UTCDateTime, utcnow


class Order(db.Model):
    __tablename__ = "orders"

    id: Mapped[int] = mapped_column(primary_key=True)
    # The buyer's confirmation page is reached by this unguessable token, never by the id.
    public_token: Mapped[str] = mapped_column(String(32), unique=True, default=lambda: uuid.uuid4().hex)
    organizer_id: Mapped[int] = mapped_column(ForeignKey("organizers.id"), index=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id"), index=True)
    source: Mapped[str] = mapped_column(String(16), default="event_page")  # event_page | widget | preview | shopify | wix
    is_test: Mapped[bool] = mapped_column(default=False)
    first_name: Mapped[str] = mapped_column(String(100))
    last_name: Mapped[str] = mapped_column(String(100))
    email: Mapped[str] = mapped_column(String(254))
    phone: Mapped[str | None] = mapped_column(String(40))
    currency: Mapped[str] = mapped_column(String(3))
    discount_code: Mapped[str | None] = mapped_column(String(40))
    subtotal: Mapped[Decimal] = mapped_column(Money)
    discount_total: Mapped[Decimal] = mapped_column(Money)
    fee_total: Mapped[Decimal] = mapped_column(Money)
    total: Mapped[Decimal] = mapped_column(Money)
    notes: Mapped[str] = mapped_column(Text, default="")
    placed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    # Where a sales-channel order came from, e.g. "shopify:820982911946154500" (None for the portal's own checkout).
    external_ref: Mapped[str | None] = mapped_column(String(120), index=True)

    event = relationship("Event")
    tickets: Mapped[list["Ticket"]] = relationship(
        back_populates="order", order_by="Ticket.position", cascade="all, delete-orphan"
    )

    @property
    def purchaser_name(self) -> str:
        return f"{self.first_name} {self.last_name}".strip()

    @property
    def note_lines(self) -> list[str]:
        return [line for line in self.notes.splitlines() if line]


class Ticket(db.Model):
    __tablename__ = "tickets"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=lambda: str(uuid.uuid4()))
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"), index=True)
    ticket_type_id: Mapped[int] = mapped_column(ForeignKey("ticket_types.id"))
    position: Mapped[int] = mapped_column(default=0)
    type_name: Mapped[str] = mapped_column(String(120))
    base_price: Mapped[Decimal] = mapped_column(Money)
    final_price: Mapped[Decimal] = mapped_column(Money)
    fee: Mapped[Decimal] = mapped_column(Money)

    order: Mapped[Order] = relationship(back_populates="tickets")
    attendee: Mapped["Attendee"] = relationship(back_populates="ticket", uselist=False, cascade="all, delete-orphan")


class Attendee(db.Model):
    __tablename__ = "attendees"

    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_id: Mapped[str] = mapped_column(ForeignKey("tickets.id"), unique=True)
    first_name: Mapped[str] = mapped_column(String(100), default="")
    last_name: Mapped[str] = mapped_column(String(100), default="")
    email: Mapped[str | None] = mapped_column(String(254))
    phone: Mapped[str | None] = mapped_column(String(40))

    ticket: Mapped[Ticket] = relationship(back_populates="attendee")

    @property
    def name(self) -> str:
        return f"{self.first_name} {self.last_name}".strip()
