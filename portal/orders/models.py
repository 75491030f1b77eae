"""Orders, the tickets in them and each ticket's attendee; and what happens to an order afterwards:
refunds, a cancellation, tickets handed to someone else."""
import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.extensions import db
from portal.types import Money, UTCDateTime, utcnow

# An order's status, for the organizer's lists.
PAID = "paid"
PARTLY_REFUNDED = "partly_refunded"
REFUNDED = "refunded"
CANCELLED = "cancelled"
ORDER_STATUS_TEXT = {PAID: "Paid", PARTLY_REFUNDED: "Partly refunded", REFUNDED: "Refunded", CANCELLED: "Cancelled"}
# Where an order was placed (Order.source), in words.
CHANNEL_TEXT = {"event_page": "Event Page", "widget": "Widget", "preview": "Preview", "shopify": "Shopify",
                "wix": "Wix"}

# A ticket's status: only a valid ticket gets its holder in.
VALID = "valid"
TICKET_CANCELLED = "cancelled"
TICKET_REFUNDED = "refunded"
TICKET_STATUS_TEXT = {VALID: "Valid", TICKET_CANCELLED: "Cancelled", TICKET_REFUNDED: "Refunded"}


class Order(db.Model):
    __tablename__ = "orders"
    # The orders list reads one event's orders newest first, filtered by status, test or real, or channel.
    __table_args__ = (Index("ix_orders_event_status", "event_id", "status", "id"),
                      Index("ix_orders_event_newest", "event_id", "id"),
                      Index("ix_orders_event_test", "event_id", "is_test", "id"),
                      Index("ix_orders_event_source", "event_id", "source", "id"),
                      # Test orders alone (the install checklist, reading test orders back): never a scan of the real
                      # ones. Queries say is_test == True, which both databases match to these.
                      Index("ix_orders_test_newest", "organizer_id", "id", postgresql_where=text("is_test"),
                            sqlite_where=text("is_test = 1")),
                      Index("ix_orders_test_placed", "placed_at", postgresql_where=text("is_test"),
                            sqlite_where=text("is_test = 1")))

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
    status: Mapped[str] = mapped_column(String(16), default=PAID)
    refunded_total: Mapped[Decimal] = mapped_column(Money, default=Decimal("0"))
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cancelled_by: Mapped[str | None] = mapped_column(String(200))
    cancel_reason: Mapped[str | None] = mapped_column(Text)

    event = relationship("Event")
    tickets: Mapped[list["Ticket"]] = relationship(
        back_populates="order", order_by="Ticket.position", cascade="all, delete-orphan"
    )
    refunds: Mapped[list["Refund"]] = relationship(back_populates="order", order_by="Refund.id",
                                                   cascade="all, delete-orphan")
    transfers: Mapped[list["Transfer"]] = relationship(order_by="Transfer.id", cascade="all, delete-orphan")

    @property
    def refundable(self) -> Decimal:
        """What can still be refunded: what was paid, minus earlier refunds."""
        return max(self.total - self.refunded_total, Decimal("0"))

    @property
    def is_cancelled(self) -> bool:
        return self.status == CANCELLED

    @property
    def valid_tickets(self) -> list["Ticket"]:
        return [t for t in self.tickets if t.is_valid]

    @property
    def status_text(self) -> str:
        return ORDER_STATUS_TEXT[self.status]

    @property
    def channel_text(self) -> str:
        return CHANNEL_TEXT.get(self.source, self.source.replace("_", " "))

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
    status: Mapped[str] = mapped_column(String(12), default=VALID)
    refunded_amount: Mapped[Decimal] = mapped_column(Money, default=Decimal("0"))

    order: Mapped[Order] = relationship(back_populates="tickets")
    attendee: Mapped["Attendee"] = relationship(back_populates="ticket", uselist=False, cascade="all, delete-orphan")

    @property
    def is_valid(self) -> bool:
        return self.status == VALID

    @property
    def status_text(self) -> str:
        return TICKET_STATUS_TEXT[self.status]


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


class Refund(db.Model):
    """Money given back on an order: for chosen tickets (which stop being valid), or an amount on the order."""

    __tablename__ = "refunds"
    __table_args__ = (
        UniqueConstraint("order_id", "request_key", name="uq_refunds_order_request"),
        UniqueConstraint("order_id", "external_ref", name="uq_refunds_order_external"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"), index=True)
    amount: Mapped[Decimal] = mapped_column(Money)
    fees_included: Mapped[bool] = mapped_column(default=True)
    is_full: Mapped[bool] = mapped_column(default=False)  # the order is fully refunded after this one
    reason: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    source: Mapped[str] = mapped_column(String(16), default="portal")  # portal | shopify | wix
    # The form's one-time key (a double click refunds once) or the store's refund id ("shopify:998877").
    request_key: Mapped[str | None] = mapped_column(String(64))
    external_ref: Mapped[str | None] = mapped_column(String(120))

    order: Mapped[Order] = relationship(back_populates="refunds")
    lines: Mapped[list["RefundLine"]] = relationship(cascade="all, delete-orphan", order_by="RefundLine.id")


class RefundLine(db.Model):
    """One ticket a refund gave money back for."""

    __tablename__ = "refund_lines"

    id: Mapped[int] = mapped_column(primary_key=True)
    refund_id: Mapped[int] = mapped_column(ForeignKey("refunds.id"), index=True)
    ticket_id: Mapped[str] = mapped_column(ForeignKey("tickets.id"), index=True)
    amount: Mapped[Decimal] = mapped_column(Money)

    ticket: Mapped[Ticket] = relationship()


class Transfer(db.Model):
    """A ticket handed from one attendee to another. The old attendee's details are kept here."""

    __tablename__ = "transfers"

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"), index=True)
    ticket_id: Mapped[str] = mapped_column(ForeignKey("tickets.id"), index=True)
    from_attendee_id: Mapped[int] = mapped_column()
    from_name: Mapped[str] = mapped_column(String(201), default="")
    from_email: Mapped[str | None] = mapped_column(String(254))
    to_attendee_id: Mapped[int] = mapped_column()
    reason: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
