"""Sales channels: an organizer's Shopify store or Wix site, its product mappings and its webhook log."""
from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint, delete, event
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.crypto import decrypt, encrypt
from portal.events.models import TicketType
from portal.extensions import db
from portal.types import UTCDateTime, utcnow

SHOPIFY = "shopify"
WIX = "wix"
PLATFORMS = (SHOPIFY, WIX)
PLATFORM_NAMES = {SHOPIFY: "Shopify", WIX: "Wix"}

CONNECTED = "connected"
DISCONNECTED = "disconnected"

# What happened to one webhook delivery.
CREATED = "created"  # the paid order became portal order(s)
CANCELLED = "cancelled"  # the store cancelled the order: so were its portal order(s)
REFUNDED = "refunded"  # a store refund, recorded on the portal order(s) it was for
DUPLICATE = "duplicate"  # a delivery already handled (same webhook id, same store order, same refund)
REJECTED = "rejected"  # not accepted: bad signature, malformed body, or an order or refund the portal can't take
UNMAPPED = "unmapped"  # some or all line items are not mapped to a ticket type
OVERSOLD = "oversold"  # imported, but it took more tickets than the capacity left
IGNORED = "ignored"  # a genuine delivery with nothing to do (other topic, not-yet-paid status, a refund of no ticket)
UNKNOWN_ORDER = "unknown order"  # a cancellation or refund of a store order the portal never imported
OUTCOMES = (CREATED, UNMAPPED, OVERSOLD, CANCELLED, REFUNDED, DUPLICATE, IGNORED, UNKNOWN_ORDER, REJECTED)
NEEDS_ATTENTION = (UNMAPPED, OVERSOLD, REJECTED)


def channel_key(platform: str, account: str) -> str:
    """What makes one store belong to one portal account at a time: "shopify:demo.myshopify.com"."""
    return f"{platform}:{account.strip().lower()}"


class SalesChannel(db.Model):
    """One per organizer and platform. Disconnecting keeps the mappings, so reconnecting restores them."""

    __tablename__ = "sales_channels"
    __table_args__ = (
        UniqueConstraint("organizer_id", "platform", name="uq_sales_channels_organizer_platform"),
        # "shopify:demo.myshopify.com" while connected, NULL otherwise: one store, one portal account at a time.
        UniqueConstraint("active_key", name="uq_sales_channels_active_key"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    organizer_id: Mapped[int] = mapped_column(ForeignKey("organizers.id", name="fk_sales_channels_organizer_id"))
    platform: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default=CONNECTED)
    # The shop domain (Shopify, e.g. demo.myshopify.com) or the app instance id (Wix).
    account: Mapped[str] = mapped_column(String(255))
    active_key: Mapped[str | None] = mapped_column(String(300))
    # Shopify: the secret webhooks are signed with (HMAC-SHA256). Wix: the app's public key (PEM). Encrypted.
    secret_enc: Mapped[str | None] = mapped_column(Text)
    connected_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    disconnected_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_webhook_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    mappings: Mapped[list["ChannelMapping"]] = relationship(back_populates="channel", cascade="all, delete-orphan")

    @property
    def name(self) -> str:
        return PLATFORM_NAMES[self.platform]

    @property
    def is_connected(self) -> bool:
        return self.status == CONNECTED

    @property
    def secret(self) -> str | None:
        return decrypt(self.secret_enc)

    @secret.setter
    def secret(self, value: str | None) -> None:
        self.secret_enc = encrypt(value)

    def connect(self, account: str, secret: str | None) -> None:
        self.account = account
        if secret:
            self.secret = secret
        self.status = CONNECTED
        self.active_key = channel_key(self.platform, account)
        self.connected_at = utcnow()
        self.disconnected_at = None

    def update(self, account: str, secret: str | None) -> None:
        """A connected store's new domain or instance id, and its new secret when one was given."""
        self.account = account
        self.active_key = channel_key(self.platform, account)
        if secret:
            self.secret = secret

    def disconnect(self) -> None:
        """Stop accepting webhooks and forget the secret; mappings and the log stay for a reconnect."""
        self.status = DISCONNECTED
        self.active_key = None
        self.secret_enc = None
        self.disconnected_at = utcnow()


class ChannelMapping(db.Model):
    """A store product (any variant) or one variant, sold as a ticket type of one of the organizer's events."""

    __tablename__ = "channel_mappings"
    __table_args__ = (
        UniqueConstraint("channel_id", "ticket_type_id", name="uq_channel_mappings_ticket_type"),
        Index("ix_channel_mappings_lookup", "channel_id", "product_id", "variant_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    channel_id: Mapped[int] = mapped_column(
        ForeignKey("sales_channels.id", name="fk_channel_mappings_channel_id", ondelete="CASCADE"))
    ticket_type_id: Mapped[int] = mapped_column(
        ForeignKey("ticket_types.id", name="fk_channel_mappings_ticket_type_id", ondelete="CASCADE"))
    product_id: Mapped[str | None] = mapped_column(String(64))
    variant_id: Mapped[str | None] = mapped_column(String(64))

    channel: Mapped[SalesChannel] = relationship(back_populates="mappings")
    ticket_type = relationship("TicketType")


class ChannelWebhook(db.Model):
    """The log of every delivery a connected channel received, and what became of it."""

    __tablename__ = "channel_webhooks"
    __table_args__ = (
        # Stores retry a delivery with the same id: the second one must not make a second order.
        UniqueConstraint("channel_id", "webhook_id", name="uq_channel_webhooks_webhook_id"),
        Index("ix_channel_webhooks_channel_received", "channel_id", "received_at"),
        Index("ix_channel_webhooks_external_order", "channel_id", "external_order_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    channel_id: Mapped[int] = mapped_column(
        ForeignKey("sales_channels.id", name="fk_channel_webhooks_channel_id", ondelete="CASCADE"))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    topic: Mapped[str] = mapped_column(String(120), default="")
    # Only set on deliveries whose signature was good, so a forged request can't block the real one.
    webhook_id: Mapped[str | None] = mapped_column(String(200))
    outcome: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str] = mapped_column(Text, default="")
    order_id: Mapped[int | None] = mapped_column(ForeignKey("orders.id", name="fk_channel_webhooks_order_id"))
    external_order_id: Mapped[str | None] = mapped_column(String(64))
    external_order_name: Mapped[str | None] = mapped_column(String(64))
    # The verified order as the store sent it (JSON), so unmapped items can be imported after mapping them.
    payload: Mapped[str | None] = mapped_column(Text)
    # JSON list of the line items left out (not mapped): [{"line_id", "title", "product_id", "variant_id", "quantity"}]
    skipped: Mapped[str | None] = mapped_column(Text)

    order = relationship("Order")

    @property
    def detail_lines(self) -> list[str]:
        return [line for line in self.detail.splitlines() if line]


@event.listens_for(TicketType, "before_delete")
def _forget_mappings(mapper, connection, target):
    """A deleted ticket type is no longer sold anywhere (SQLite does not enforce the FK's ON DELETE CASCADE)."""
    connection.execute(delete(ChannelMapping.__table__).where(ChannelMapping.ticket_type_id == target.id))
