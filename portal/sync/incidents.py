"""Alerts: when a Klaviyo connection turns to Needs reconnect, or events stop going out (failed, or held longer
than ALERT_HELD_MINUTES; a single retry is no incident), open an incident and e-mail the organizer once; when it
is over, close it and e-mail once more. Every organizer page shows a banner meanwhile (portal.integrations.health).

The sweeper (every worker, every few seconds) calls sweep(). At most one incident is open per organizer (a unique
column), so two workers never open two; each mail is claimed by a guarded update before it is sent, so two
workers never send it twice. Mails go out in an rq job enqueued after the commit, by dotted name.
"""
import logging
from dataclasses import dataclass
from datetime import timedelta

from flask import current_app
from redis.exceptions import RedisError
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from portal import mail
from portal.auth.models import Organizer
from portal.extensions import db
from portal.sync.health_models import (
    FAILING, MAIL_OFF, MAIL_PENDING, MAIL_SENDING, MAIL_SENT, NEEDS_RECONNECT, Incident,
)
from portal.sync.models import CONNECTED, FAILED, HELD, NEEDS_RECONNECT as CONNECTION_NEEDS_RECONNECT
from portal.sync.models import KlaviyoConnection, OutboxEvent
from portal.sync.queue import queue
from portal.text import plural
from portal.types import utcnow

log = logging.getLogger("portal.sync")

JOB = "portal.sync.incidents.send_mail"
MAIL_RETRY_SECONDS = 60  # a mail the server refused is tried again this long after
SENDING_LEASE = timedelta(minutes=2)  # a worker that died while sending: the mail is tried again after this


@dataclass(frozen=True)
class Trouble:
    """What is wrong with one organizer's Klaviyo sync right now, if anything."""

    organizer_id: int
    status: str  # the connection's status
    reason: str | None  # the connection's status_reason
    held: int = 0
    failed: int = 0
    held_since: object = None  # the oldest held event's time

    def kind(self, held_minutes: float) -> str | None:
        """NEEDS_RECONNECT, FAILING, or None when there is no incident."""
        if self.status == CONNECTION_NEEDS_RECONNECT:
            return NEEDS_RECONNECT
        if self.failed:
            return FAILING
        if self.held and self.held_since and self.held_since <= utcnow() - timedelta(minutes=held_minutes):
            return FAILING
        return None


def trouble(organizer_id: int) -> Trouble | None:
    """This organizer's sync trouble (for the banner): None when connected and nothing is held or failed."""
    connection = db.session.scalar(select(KlaviyoConnection).where(KlaviyoConnection.organizer_id == organizer_id))
    if connection is None or connection.status not in (CONNECTED, CONNECTION_NEEDS_RECONNECT):
        return None
    counts = dict(db.session.execute(
        select(OutboxEvent.status, func.count()).where(OutboxEvent.organizer_id == organizer_id,
                                                       OutboxEvent.status.in_((HELD, FAILED)))
        .group_by(OutboxEvent.status)).all())
    found = Trouble(organizer_id, connection.status, connection.status_reason, counts.get(HELD, 0),
                    counts.get(FAILED, 0))
    if found.status == CONNECTED and not found.held and not found.failed:
        return None
    return found


def _all_trouble() -> dict[int, Trouble]:
    """Every connected (or needs-reconnect) organizer with something wrong."""
    rows = db.session.execute(
        select(OutboxEvent.organizer_id, OutboxEvent.status, func.count(), func.min(OutboxEvent.created_at))
        .where(OutboxEvent.status.in_((HELD, FAILED))).group_by(OutboxEvent.organizer_id, OutboxEvent.status)).all()
    counts: dict[int, dict] = {}
    for organizer_id, status, count, oldest in rows:
        counts.setdefault(organizer_id, {})[status] = (count, oldest)
    connections = db.session.execute(
        select(KlaviyoConnection.organizer_id, KlaviyoConnection.status, KlaviyoConnection.status_reason)
        .where(KlaviyoConnection.status.in_((CONNECTED, CONNECTION_NEEDS_RECONNECT)))
        .where((KlaviyoConnection.status == CONNECTION_NEEDS_RECONNECT)
               | KlaviyoConnection.organizer_id.in_(list(counts) or [0]))).all()
    out = {}
    for organizer_id, status, reason in connections:
        mine = counts.get(organizer_id, {})
        held, held_since = mine.get(HELD, (0, None))
        out[organizer_id] = Trouble(organizer_id, status, reason, held, mine.get(FAILED, (0, None))[0], held_since)
    return out


def sweep() -> None:
    """Open incidents for new trouble, keep open ones up to date, close those that are over; send their mails."""
    held_minutes = current_app.config["ALERT_HELD_MINUTES"]
    now = utcnow()
    current = _all_trouble()
    open_ones = {i.organizer_id: i for i in db.session.scalars(select(Incident).where(Incident.resolved_at.is_(None)))}
    mails: list[tuple[int, str]] = []
    for organizer_id, found in current.items():
        kind = found.kind(held_minutes)
        incident = open_ones.get(organizer_id)
        if incident is None and kind is not None:
            incident = _open(found, kind, now)
            if incident is not None and incident.opened_mail == MAIL_PENDING:
                mails.append((incident.id, "opened"))
        elif incident is not None:
            incident.held_most = max(incident.held_most, found.held)
            incident.failed_most = max(incident.failed_most, found.failed)
    for organizer_id, incident in open_ones.items():
        found = current.get(organizer_id)
        if found is None or found.kind(held_minutes) is None:
            how = _closing_words(organizer_id)
            incident.resolved_at, incident.resolution, incident.open_for = now, how, None
            if how.startswith("Klaviyo was disconnected"):
                incident.resolved_mail = MAIL_OFF  # the organizer chose it: nothing to report
            else:
                incident.resolved_mail = MAIL_PENDING if incident.opened_mail == MAIL_SENT else MAIL_OFF
                incident.resolved_mail_at = now  # while pending: when it was last tried (see _mails_to_retry)
                if incident.resolved_mail == MAIL_PENDING:
                    mails.append((incident.id, "resolved"))
    db.session.commit()
    mails += _mails_to_retry(now)
    for incident_id, which in mails:
        _enqueue_mail(incident_id, which)


def _open(found: Trouble, kind: str, now) -> Incident | None:
    organizer = db.session.get(Organizer, found.organizer_id)
    if kind == NEEDS_RECONNECT:
        reason = found.reason or "Klaviyo no longer accepts the connection."
    elif found.failed:
        reason = f"{plural(found.failed, 'event')} failed to reach Klaviyo."
    else:
        reason = f"{plural(found.held, 'event')} have been held for more than a few minutes."
    incident = Incident(organizer_id=found.organizer_id, open_for=found.organizer_id, kind=kind, reason=reason,
                        opened_at=now, held_most=found.held, failed_most=found.failed,
                        mail_to=organizer.email if organizer else None, opened_mail_at=now,
                        opened_mail=MAIL_PENDING if mail.configured() and organizer else MAIL_OFF)
    db.session.add(incident)
    try:
        db.session.commit()
    except IntegrityError:  # another worker opened it a moment ago
        db.session.rollback()
        return None
    log.warning("klaviyo.incident_opened organizer=%s kind=%s", found.organizer_id, kind)
    return incident


def _closing_words(organizer_id: int) -> str:
    status = db.session.scalar(select(KlaviyoConnection.status).where(KlaviyoConnection.organizer_id == organizer_id))
    if status is None or status not in (CONNECTED, CONNECTION_NEEDS_RECONNECT):
        return "Klaviyo was disconnected; what was waiting was cancelled."
    return "Klaviyo accepts events again and nothing is held or failed."


def _mails_to_retry(now) -> list[tuple[int, str]]:
    """Mails a server refused (retried after a minute) or a dead worker left half-sent."""
    retry_before = now - timedelta(seconds=MAIL_RETRY_SECONDS)
    out = []
    for column, at, which in ((Incident.opened_mail, Incident.opened_mail_at, "opened"),
                              (Incident.resolved_mail, Incident.resolved_mail_at, "resolved")):
        db.session.execute(update(Incident).where(column == MAIL_SENDING, at < now - SENDING_LEASE)
                           .values({column: MAIL_PENDING}))
        ids = db.session.scalars(select(Incident.id).where(column == MAIL_PENDING, at.is_not(None), at < retry_before))
        out += [(incident_id, which) for incident_id in ids]
    db.session.commit()
    return out


def _enqueue_mail(incident_id: int, which: str) -> None:
    try:
        queue().enqueue(JOB, incident_id, which, result_ttl=0, failure_ttl=24 * 3600, job_timeout=60)
    except RedisError as exc:  # the sweeper tries again after MAIL_RETRY_SECONDS
        log.warning("incident mail enqueue failed incident=%s error=%s", incident_id, type(exc).__name__)


# --- the mail job ---------------------------------------------------------------------------------------

def send_mail(incident_id: int, which: str) -> bool:
    """Send an incident's "opened" or "resolved" mail, once: claimed by a guarded update first."""
    state, at = (Incident.opened_mail, Incident.opened_mail_at) if which == "opened" else \
        (Incident.resolved_mail, Incident.resolved_mail_at)
    claimed = db.session.execute(update(Incident).where(Incident.id == incident_id, state == MAIL_PENDING)
                                 .values({state: MAIL_SENDING, at: utcnow()})).rowcount
    db.session.commit()
    if not claimed:
        return False
    incident = db.session.get(Incident, incident_id)
    organizer = db.session.get(Organizer, incident.organizer_id)
    subject, body = compose(incident, organizer, which)
    try:
        sent = mail.send(incident.mail_to or organizer.email, subject, body)
    except mail.MailError as exc:
        log.warning("incident mail failed incident=%s which=%s error=%s", incident_id, which, exc)
        db.session.execute(update(Incident).where(Incident.id == incident_id)
                           .values({state: MAIL_PENDING, at: utcnow(), Incident.mail_error: str(exc)}))
        db.session.commit()
        return False
    db.session.execute(update(Incident).where(Incident.id == incident_id)
                       .values({state: MAIL_SENT if sent else MAIL_OFF, at: utcnow(), Incident.mail_error: None}))
    db.session.commit()
    log.info("klaviyo.incident_mail incident=%s which=%s sent=%s", incident_id, which, sent)
    return sent


def compose(incident: Incident, organizer: Organizer, which: str) -> tuple[str, str]:
    """The subject and text of an incident's mail."""
    base = current_app.config["PUBLIC_BASE_URL"].rstrip("/")
    link = f"{base}/manage/integrations/"
    when = incident.opened_at.strftime("%-d %b %Y, %H:%M UTC")
    hello = f"Hello {organizer.name},\n\n"
    if which == "resolved":
        ended = (incident.resolved_at or utcnow()).strftime("%-d %b %Y, %H:%M UTC")
        return ("Resolved: your ticket sales reach Klaviyo again",
                hello + f"The problem with your Klaviyo connection that started on {when} is over ({ended}).\n"
                f"{incident.resolution}\n\nEvents that were held have been sent, in the order they happened.\n\n"
                f"The details, and every past incident, are under Integrations → Klaviyo → View Details:\n{link}\n")
    if incident.kind == NEEDS_RECONNECT:
        return ("Action needed: reconnect Klaviyo, your ticket sales are being held",
                hello + f"Since {when}, Klaviyo no longer accepts the portal's connection to your account.\n"
                f"{incident.reason}\n\nNew purchases are kept and will be sent as soon as you reconnect: nothing is "
                f"lost ({plural(incident.held_most, 'event')} held so far).\n\n"
                f"Reconnect here (Integrations → Klaviyo → Reconnect):\n{link}\n")
    return ("Ticket sales are not reaching Klaviyo",
            hello + f"Since {when}, events are not going out to Klaviyo: {incident.reason}\n\n"
            f"See why, and retry, on the Integrations page:\n{link}\n")


# --- what the pages show --------------------------------------------------------------------------------

def history(organizer_id: int, limit: int = 20) -> list[Incident]:
    """This organizer's incidents, newest first, for View Details."""
    return list(db.session.scalars(select(Incident).where(Incident.organizer_id == organizer_id)
                                   .order_by(Incident.id.desc()).limit(limit)))
