"""Sales channels: an organizer's Shopify store or Wix site, its product mappings and its webhook log."""
from datetime import datetime, timedelta

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

PENDING = "pending"  # claimed, not yet proved: no delivery signed with its secret or key has arrived
CONNECTED = "connected"  # proved: the store's own signed webhook arrived
DISCONNECTED = "disconnected"  # disconnected, or a claim another account proved first with the same key
CLAIM_LIFETIME = timedelta(days=7)  # how long a claim waits for its proof

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
    """Which store a claim is on: "shopify:demo.myshopify.com"."""
    return f"{platform}:{account.strip().lower()}"


class SalesChannel(db.Model):
    """One per organizer and platform. Disconnecting keeps the mappings, so reconnecting restores them."""

    __tablename__ = "sales_channels"
    __table_args__ = (
        UniqueConstraint("organizer_id", "platform", name="uq_sales_channels_organizer_platform"),
        # The store and a fingerprint of its key while proved, NULL otherwise: one store's signing key, one portal
        # account (see portal/channels/ownership.py for why the key is part of it).
        UniqueConstraint("active_key", name="uq_sales_channels_active_key"),
        Index("ix_sales_channels_store_key", "store_key"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    organizer_id: Mapped[int] = mapped_column(ForeignKey("organizers.id", name="fk_sales_channels_organizer_id"))
    platform: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default=CONNECTED)
    # The shop domain (Shopify, e.g. demo.myshopify.com) or the app instance id (Wix).
    account: Mapped[str] = mapped_column(String(255))
    active_key: Mapped[str | None] = mapped_column(String(300))
    # channel_key() while pending or connected, NULL otherwise: how a webhook finds the claims on its store.
    store_key: Mapped[str | None] = mapped_column(String(300))
    # Shopify: the secret webhooks are signed with (HMAC-SHA256). Wix: the app's public key (PEM). Encrypted.
    secret_enc: Mapped[str | None] = mapped_column(Text)
    connected_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    disconnected_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_webhook_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    claim_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # while pending
    proved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # when the store's signed webhook proved it
    # Why a claim ended without being proved (another account proved the same key first), for the card.
    claim_note: Mapped[str | None] = mapped_column(Text)

    mappings: Mapped[list["ChannelMapping"]] = relationship(back_populates="channel", cascade="all, delete-orphan")

    @property
    def name(self) -> str:
        return PLATFORM_NAMES[self.platform]

    @property
    def is_connected(self) -> bool:
        """Proved: its webhooks are imported."""
        return self.status == CONNECTED

    @property
    def is_pending(self) -> bool:
        """Claimed and waiting for the store's signed webhook, not yet expired."""
        return self.status == PENDING and not self.claim_expired

    @property
    def claim_expired(self) -> bool:
        return self.status == PENDING and (self.claim_expires_at is None or self.claim_expires_at <= utcnow())

    @property
    def secret(self) -> str | None:
        return decrypt(self.secret_enc)

    @secret.setter
    def secret(self, value: str | None) -> None:
        self.secret_enc = encrypt(value)

    def connect(self, account: str, secret: str | None) -> None:
        """Claim the store (with a new secret when one was given): pending until the store proves it."""
        self.account = account
        if secret:
            self.secret = secret
        self.status = PENDING
        self.active_key = None
        self.store_key = channel_key(self.platform, account)
        self.connected_at = utcnow()
        self.claim_expires_at = self.connected_at + CLAIM_LIFETIME
        self.proved_at = self.disconnected_at = self.claim_note = None

    def changes(self, account: str, secret: str | None) -> bool:
        """Whether saving this domain or instance id and this secret (None: keep it) changes the claim."""
        return channel_key(self.platform, account) != channel_key(self.platform, self.account or "") or \
            bool(secret and secret != self.secret)

    def prove(self, active_key: str) -> None:
        """The store's own signed webhook arrived: from now on its webhooks are imported."""
        self.status = CONNECTED
        self.active_key = active_key
        self.proved_at = utcnow()
        self.claim_expires_at = None

    def disconnect(self, note: str | None = None) -> None:
        """Stop accepting webhooks and forget the secret; mappings and the log stay for a reconnect."""
        self.status = DISCONNECTED
        self.active_key = self.store_key = self.claim_expires_at = None
        self.secret_enc = None
        self.disconnected_at = utcnow()
        self.claim_note = note


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
