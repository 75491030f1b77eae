"""Marketing consent: the wording purchasers are shown (each edit a new version), what each order's purchaser
saw and agreed to, and the Klaviyo list that consent subscribes them to."""
from datetime import datetime

from sqlalchemy import ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, backref, mapped_column, relationship

from portal.extensions import db
from portal.klaviyo.subscriptions import Consent, source_for
from portal.types import UTCDateTime, utcnow

EMAIL, SMS = "email", "sms"
# The wording a purchaser sees until the organizer writes their own (version 0). {organizer} is their name.
DEFAULT_WORDING = {EMAIL: "Send me news about upcoming events from {organizer}",
                   SMS: "Send me text messages about upcoming events from {organizer}"}
WORDING_MAX = 300

# Why subscriptions wait although the connection works; the card and the settings say what to do.
LIST_MISSING = "list_missing"  # the chosen list was deleted in Klaviyo
NO_PERMISSION = "permission"  # Klaviyo answered 403 to a subscription


class ConsentWording(db.Model):
    """One version of the consent text an organizer shows at checkout. Versions are never changed, only added."""

    __tablename__ = "consent_wordings"
    __table_args__ = (UniqueConstraint("organizer_id", "channel", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    organizer_id: Mapped[int] = mapped_column(ForeignKey("organizers.id"), index=True)
    channel: Mapped[str] = mapped_column(String(8))  # email | sms
    version: Mapped[int]
    text: Mapped[str] = mapped_column(String(WORDING_MAX))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(200), default="")


class ListSettings(db.Model):
    """Where consenting buyers are subscribed. Whether the feature is on is the connection's ("subscriptions" in
    KlaviyoConnection.features): one place, which also decides the scopes asked for."""

    __tablename__ = "klaviyo_list_settings"

    id: Mapped[int] = mapped_column(primary_key=True)
    organizer_id: Mapped[int] = mapped_column(ForeignKey("organizers.id"), unique=True)
    list_id: Mapped[str | None] = mapped_column(String(64))
    list_name: Mapped[str | None] = mapped_column(String(255))
    include_test_orders: Mapped[bool] = mapped_column(default=False)
    problem: Mapped[str | None] = mapped_column(String(20))  # LIST_MISSING | NO_PERMISSION
    problem_detail: Mapped[str | None] = mapped_column(Text)
    problem_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class OrderConsent(db.Model):
    """What the purchaser of one order saw and did: the proof behind a list subscription (or its absence)."""

    __tablename__ = "order_consents"

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"), unique=True)
    organizer_id: Mapped[int] = mapped_column(ForeignKey("organizers.id"), index=True)
    email_marketing: Mapped[bool] = mapped_column(default=False)
    sms_marketing: Mapped[bool] = mapped_column(default=False)
    sms_phone: Mapped[str | None] = mapped_column(String(40))  # the number the SMS consent is for
    # The wording shown, as a version of ConsentWording (0: the default) and as the purchaser read it. None for a
    # store's own checkout, whose wording the portal never saw.
    email_version: Mapped[int | None]
    email_text: Mapped[str | None] = mapped_column(Text)
    sms_version: Mapped[int | None]
    sms_text: Mapped[str | None] = mapped_column(Text)
    consented_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)  # when the form was sent
    channel: Mapped[str] = mapped_column(String(16))  # event_page | widget | preview | shopify | wix
    language: Mapped[str | None] = mapped_column(String(35))  # the page's language, e.g. "en"
    source_detail: Mapped[str | None] = mapped_column(String(300))  # e.g. "Shopify: buyer_accepts_marketing"
    note: Mapped[str | None] = mapped_column(Text)  # e.g. why the SMS part was left out

    # order.consent, without the orders module knowing about consent.
    order = relationship("Order", backref=backref("consent", uselist=False, cascade="all, delete-orphan"))

    @property
    def agreed(self) -> bool:
        return self.email_marketing or self.sms_marketing

    def as_consent(self, order, phone_region: str) -> Consent:
        """This record as the payload builders take it (portal.klaviyo.subscriptions)."""
        return Consent(order_id=order.id, email=order.email, email_marketing=self.email_marketing,
                       sms_marketing=self.sms_marketing, phone=self.sms_phone, consented_at=self.consented_at,
                       source=source_for(order.channel_text), phone_region=phone_region)
