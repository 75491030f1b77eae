"""Slowing down password guessing: at most LOGIN_MAX_FAILURES tries per e-mail and client address.

Each try takes its place with one atomic statement before the password is even checked, so parallel
tries get the same answers as tries one after another: the sixth is refused, however many arrive at once.
"""
import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import current_app, request
from sqlalchemy import and_, case, delete, or_, update
from sqlalchemy.dialects import postgresql, sqlite

from portal.auth.models import LoginThrottle
from portal.extensions import db
from portal.types import utcnow


@dataclass(frozen=True)
class Attempt:
    key: str
    allowed: bool
    locked_until: datetime | None
    failures: int


def throttle_key(email: str) -> str:
    """Failures count per e-mail and client address, so a stranger can't lock an organizer out."""
    return hashlib.sha256(f"{email}|{request.remote_addr}".encode()).hexdigest()


def _window() -> timedelta:
    return timedelta(seconds=current_app.config["LOGIN_LOCK_SECONDS"])


def begin(email: str) -> Attempt:
    """Take one try for this e-mail from this address, and commit. Not allowed while locked."""
    key, now = throttle_key(email), utcnow()
    insert = postgresql.insert if db.session.get_bind().dialect.name == "postgresql" else sqlite.insert
    db.session.execute(insert(LoginThrottle).values(key=key, failures=0, first_failure_at=now)
                       .on_conflict_do_nothing(index_elements=["key"]))
    stale = and_(LoginThrottle.first_failure_at < now - _window(),
                 or_(LoginThrottle.locked_until.is_(None), LoginThrottle.locked_until < now))
    failures, locked_until = db.session.execute(
        update(LoginThrottle).where(LoginThrottle.key == key)
        .values(failures=case((stale, 1), else_=LoginThrottle.failures + 1),
                first_failure_at=case((stale, now), else_=LoginThrottle.first_failure_at),
                locked_until=case((stale, None), else_=LoginThrottle.locked_until))
        .returning(LoginThrottle.failures, LoginThrottle.locked_until)).one()
    limit = current_app.config["LOGIN_MAX_FAILURES"]
    if locked_until is None and failures > limit:
        locked_until = now + _window()
        db.session.execute(update(LoginThrottle).where(LoginThrottle.key == key).values(locked_until=locked_until))
    db.session.commit()
    allowed = failures <= limit and not (locked_until and locked_until > now)
    return Attempt(key, allowed, locked_until, failures)


def failed(attempt: Attempt) -> None:
    """The password was wrong: the try counts, and the last allowed one locks."""
    if attempt.failures >= current_app.config["LOGIN_MAX_FAILURES"]:
        db.session.execute(update(LoginThrottle).where(LoginThrottle.key == attempt.key,
                                                       LoginThrottle.locked_until.is_(None))
                           .values(locked_until=utcnow() + _window()))
        db.session.commit()


def succeeded(attempt: Attempt) -> None:
    """The right password before the lock: the count starts again."""
    db.session.execute(delete(LoginThrottle).where(LoginThrottle.key == attempt.key))
    db.session.commit()
