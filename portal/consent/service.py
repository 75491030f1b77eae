"""Marketing consent as the checkout, the sales channels and the settings use it: the wording shown (versioned),
the consent record written with each order, and the list subscription it queues, in the order's transaction.

A subscription is queued only for a purchaser who agreed (never for the attendees they named), at most once per
order (its unique_id), while the organizer has list subscriptions on, and for a test order only when they asked.
"""
import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select

from portal.auth.models import Organizer
from portal.consent.models import DEFAULT_WORDING, EMAIL, SMS, WORDING_MAX, ConsentWording, ListSettings, OrderConsent
from portal.extensions import db
from portal.klaviyo.subscriptions import build_subscription
from portal.sync import outbox
from portal.sync.connection import LOOK_UP, connection_for
from portal.sync.models import DISCONNECTED, SUBSCRIPTION, KlaviyoConnection, OutboxEvent
from portal.types import utcnow

FEATURE = "subscriptions"  # the connection feature (portal.sync.connection.FEATURE_SCOPES)
_LANGUAGE = re.compile(r"[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8}){0,3}")


@dataclass
class ConsentInput:
    """What a purchaser agreed to, as a checkout form or a store's order says it."""

    email: bool = False
    sms: bool = False
    channel: str = "event_page"  # event_page | widget | preview | shopify | wix
    language: str | None = None  # the page's language
    email_version: int | None = None  # the wording version shown; None when the portal showed none (a store)
    sms_version: int | None = None
    consented_at: datetime | None = None  # None: now
    source_detail: str | None = None  # where a store said so, e.g. "Shopify: buyer_accepts_marketing"


@dataclass(frozen=True)
class Wording:
    channel: str
    version: int  # 0: the default wording
    template: str  # may hold {organizer}

    def text(self, organizer_name: str) -> str:
        return self.template.replace("{organizer}", organizer_name)


def language(value: str | None) -> str | None:
    """A page language tag ("en", "de-CH") as posted, or None when it is not one."""
    value = (value or "").strip()
    return value if len(value) <= 35 and _LANGUAGE.fullmatch(value) else None


# --- the wording ---------------------------------------------------------------------------------------

def wording(organizer_id: int, channel: str, version: int | None = None) -> Wording:
    """The organizer's current wording for a channel (or one version of it); the default until they write one."""
    query = select(ConsentWording).where(ConsentWording.organizer_id == organizer_id, ConsentWording.channel == channel)
    query = query.where(ConsentWording.version == version) if version else query.order_by(ConsentWording.version.desc())
    row = db.session.scalar(query.limit(1)) if version != 0 else None
    if row is None:
        return Wording(channel, 0, DEFAULT_WORDING[channel])
    return Wording(channel, row.version, row.text)


def history(organizer_id: int, channel: str) -> list[ConsentWording]:
    return list(db.session.scalars(select(ConsentWording).where(
        ConsentWording.organizer_id == organizer_id, ConsentWording.channel == channel)
        .order_by(ConsentWording.version.desc())))


def check_wording(text: str) -> str | None:
    """What is wrong with a wording as typed, or None."""
    if not text.strip():
        return "Write what the purchaser agrees to, e.g. “Send me news about upcoming events from {organizer}”."
    if len(text) > WORDING_MAX:
        return f"Use at most {WORDING_MAX} characters."
    if any(ord(ch) < 32 for ch in text):
        return "Keep it on one line, without control characters."
    return None


def save_wording(organizer_id: int, channel: str, text: str, who: str) -> ConsentWording | None:
    """A new version of the wording, or None when it is the same as the current one. The caller commits."""
    text = text.strip()
    if text == wording(organizer_id, channel).template:
        return None
    latest = db.session.scalar(select(func.max(ConsentWording.version)).where(
        ConsentWording.organizer_id == organizer_id, ConsentWording.channel == channel)) or 0
    row = ConsentWording(organizer_id=organizer_id, channel=channel, version=latest + 1, text=text, created_by=who)
    db.session.add(row)
    return row


# --- settings --------------------------------------------------------------------------------------------

def settings_for(organizer_id: int) -> ListSettings | None:
    return db.session.scalar(select(ListSettings).where(ListSettings.organizer_id == organizer_id))


def ensure_settings(organizer_id: int) -> ListSettings:
    """The organizer's list settings, made on first use. The caller commits."""
    settings = settings_for(organizer_id)
    if settings is None:
        settings = ListSettings(organizer_id=organizer_id)
        db.session.add(settings)
    return settings


def is_on(connection: KlaviyoConnection | None) -> bool:
    """Whether consenting buyers are subscribed: the organizer turned it on, and Klaviyo is (still) connected."""
    return bool(connection and connection.status != DISCONNECTED and FEATURE in connection.feature_list)


def counts(organizer_id: int) -> dict:
    """Subscriptions sent, pending (waiting or held) and failed, for the settings."""
    found = dict(db.session.execute(
        select(OutboxEvent.status, func.count()).where(OutboxEvent.organizer_id == organizer_id,
                                                       OutboxEvent.kind == SUBSCRIPTION)
        .group_by(OutboxEvent.status)).all())
    return {"sent": found.get("sent", 0), "pending": found.get("pending", 0) + found.get("claimed", 0),
            "held": found.get("held", 0), "failed": found.get("failed", 0), "not_sent": found.get("cancelled", 0)}


# --- an order's consent ----------------------------------------------------------------------------------

def organizer_name(organizer_id: int) -> str:
    organizer = db.session.get(Organizer, organizer_id)
    return organizer.name if organizer else ""


def record(order, consent: ConsentInput | None, connection: KlaviyoConnection | None,
           phone_region: str) -> int:
    """Keep what this order's purchaser saw and agreed to, and queue their list subscription when it is due.
    In the order's own transaction; the caller commits. Returns how many outbox rows it queued (0 or 1)."""
    if consent is None:
        return 0
    name = organizer_name(order.organizer_id)
    # The version the form says it showed, checked against the organizer's own versions.
    shown = {channel: wording(order.organizer_id, channel, version)
             for channel, version in ((EMAIL, consent.email_version), (SMS, consent.sms_version)) if version is not None}
    email, sms = shown.get(EMAIL), shown.get(SMS)
    row = OrderConsent(
        order_id=order.id, organizer_id=order.organizer_id, email_marketing=consent.email, sms_marketing=consent.sms,
        sms_phone=order.phone if consent.sms else None, email_version=email.version if email else None,
        email_text=email.text(name) if email else None, sms_version=sms.version if sms else None,
        sms_text=sms.text(name) if sms else None, consented_at=consent.consented_at or utcnow(),
        channel=consent.channel, language=language(consent.language), source_detail=consent.source_detail)
    db.session.add(row)
    built = build_subscription(row.as_consent(order, phone_region))
    if built.notes:
        row.note = " ".join(built.notes)
        order.notes = "\n".join([*order.note_lines, *built.notes])
    if built.event is None or not is_on(connection):
        return 0
    settings = settings_for(order.organizer_id)
    if order.is_test and not (settings and settings.include_test_orders):
        return 0
    return outbox.add_rows(order.organizer_id, order.id, [built.event], connection, kind=SUBSCRIPTION)


# --- the checkout's box ----------------------------------------------------------------------------------

def _version(value) -> int | None:
    value = (value or "").strip()
    return int(value) if value.isascii() and value.isdigit() and len(value) <= 6 else None


def from_checkout(event, form, channel: str, phone: str | None, connection=LOOK_UP) -> ConsentInput | None:
    """What the purchaser did with the consent box, from the posted checkout form; None when no box was shown
    (list subscriptions off). SMS consent counts only with a phone number, the only case the box is shown in."""
    if connection is LOOK_UP:
        connection = connection_for(event.organizer_id)
    if not is_on(connection):
        return None
    versions = {channel_: _version(form.get(f"consent_{channel_}_version")) for channel_ in (EMAIL, SMS)}
    current = {channel_: wording(event.organizer_id, channel_).version for channel_ in (EMAIL, SMS)}
    return ConsentInput(
        email=form.get("marketing_email") == "1", sms=bool(phone) and form.get("marketing_sms") == "1",
        channel=channel, language=language(form.get("consent_language")) or "en",
        email_version=versions[EMAIL] if versions[EMAIL] is not None else current[EMAIL],
        sms_version=(versions[SMS] if versions[SMS] is not None else current[SMS]) if phone else None)
