"""Checkouts that were started on an Event Page or widget, for Started Checkout (abandoned carts), and the
organizer's switch for it."""
from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from portal.extensions import db
from portal.types import UTCDateTime, utcnow

OPEN = "open"  # a valid e-mail and a ticket, not ordered yet: Started Checkout goes once the delay is over
SENDING = "sending"  # a worker is queueing its Started Checkout
SENT = "sent"  # its Started Checkout is in the outbox
COMPLETED = "completed"  # it became an order before the delay: nothing is sent
REPLACED = "replaced"  # the same buyer started again for the same event: the newer one counts
SKIPPED = "skipped"  # not sent: Started Checkout was off, or Klaviyo not connected, when it was due


class CheckoutSession(db.Model):
    """One checkout form, from the moment the buyer's e-mail and a ticket are in it."""

    __tablename__ = "checkout_sessions"
    __table_args__ = (Index("ix_checkout_sessions_due", "status", "started_at"),
                      Index("ix_checkout_sessions_buyer", "event_id", "email", "status"))

    id: Mapped[int] = mapped_column(primary_key=True)
    token: Mapped[str] = mapped_column(String(64), unique=True)  # the form's checkout_session field
    organizer_id: Mapped[int] = mapped_column(ForeignKey("organizers.id"), index=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id"))
    layout: Mapped[str] = mapped_column(String(8), default="page")  # page | widget
    is_test: Mapped[bool] = mapped_column(default=False)  # the organizer's own preview
    email: Mapped[str] = mapped_column(String(254))
    first_name: Mapped[str] = mapped_column(String(100), default="")
    last_name: Mapped[str] = mapped_column(String(100), default="")
    selection: Mapped[str] = mapped_column(Text, default="{}")  # JSON: {"quantities": {type id: n}, "discount"}
    status: Mapped[str] = mapped_column(String(12), default=OPEN)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    order_id: Mapped[int | None] = mapped_column(ForeignKey("orders.id"))
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class KlaviyoOptions(db.Model):
    """An organizer's choices about what the portal sends to Klaviyo beyond orders."""

    __tablename__ = "klaviyo_options"

    organizer_id: Mapped[int] = mapped_column(ForeignKey("organizers.id"), primary_key=True)
    started_checkout: Mapped[bool] = mapped_column(default=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
