"""An organizer's connection to Klaviyo."""
from datetime import datetime

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from portal.extensions import db
from portal.types import UTCDateTime

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
