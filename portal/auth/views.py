"""Sign up, log in, log out, and the account page (a new password, log out everywhere)."""
from urllib.parse import urlsplit

from flask import Blueprint, flash, redirect, request, session, url_for
from flask_login import current_user, login_required, logout_user
from flask_wtf import FlaskForm
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from werkzeug.security import check_password_hash
from wtforms import EmailField, PasswordField, StringField
from wtforms.validators import DataRequired, Email, InputRequired, Length, ValidationError

from portal.auth import passwords, throttle
from portal.auth.login import start_session
from portal.auth.models import Organizer
from portal.extensions import db
from portal.htmx import render
from portal.types import utcnow

bp = Blueprint("auth", __name__, url_prefix="/auth")


class SignupForm(FlaskForm):
    name = StringField("Organization or your name", filters=[lambda v: v.strip() if isinstance(v, str) else v],
                       validators=[DataRequired(), Length(max=120)])
    email = EmailField("E-mail", validators=[InputRequired(), Email(check_deliverability=False), Length(max=254)])
    password = PasswordField("Password", validators=[InputRequired()])

    def validate_password(self, field):
        if problem := passwords.problem(field.data or "", self.email.data or "", self.name.data or ""):
            raise ValidationError(problem)


class LoginForm(FlaskForm):
    email = EmailField("E-mail", validators=[InputRequired(), Length(max=254)])
    password = PasswordField("Password", validators=[InputRequired(), Length(max=200)])


@bp.route("/signup", methods=["GET", "POST"])
def signup():
    form = SignupForm()
    if form.validate_on_submit():
        email = form.email.data.strip().lower()
        organizer = Organizer(name=form.name.data.strip(), email=email)
        organizer.set_password(form.password.data)
        db.session.add(organizer)
        try:
            db.session.commit()  # the unique e-mail decides, so two sign-ups at once give one account
        except IntegrityError:
            db.session.rollback()
            form.email.errors.append("An account with this e-mail exists already. Log in instead.")
        else:
            start_session(organizer)
            flash("Welcome! Your account is ready.", "success")
            return redirect(url_for("events.index"), code=303)
    return render("auth/signup.html", form=form), 200 if request.method in ("GET", "HEAD") else 422


# A hash of the same cost as a real one, checked when the e-mail has no account, so both take as long.
_DUMMY_HASH = None


def _dummy_hash() -> str:
    global _DUMMY_HASH
    if _DUMMY_HASH is None:
        probe = Organizer()
        probe.set_password("no account has this password")
        _DUMMY_HASH = probe.password_hash
    return _DUMMY_HASH


@bp.route("/login", methods=["GET", "POST"])
def login():
    form = LoginForm()
    if form.validate_on_submit():
        email = form.email.data.strip().lower()
        attempt = throttle.begin(email)
        if not attempt.allowed:
            minutes = int(((attempt.locked_until or utcnow()) - utcnow()).total_seconds() // 60) + 1
            form.password.errors.append(
                f"Too many failed attempts. Wait {minutes} minute{'s' if minutes != 1 else ''} and try again.")
            return render("auth/login.html", form=form), 429
        organizer = db.session.scalar(select(Organizer).where(Organizer.email == email))
        if organizer is None:
            check_password_hash(_dummy_hash(), form.password.data)  # as long as a real check
        elif organizer.check_password(form.password.data):
            throttle.succeeded(attempt)
            start_session(organizer)
            return redirect(_safe_next(request.args.get("next")) or url_for("integrations.index"), code=303)
        throttle.failed(attempt)
        form.password.errors.append("That e-mail and password do not match an account.")
        return render("auth/login.html", form=form), 401
    return render("auth/login.html", form=form), 200 if request.method in ("GET", "HEAD") else 422


@bp.post("/logout")
@login_required
def logout():
    """End this session and every copy of it."""
    current_user.end_sessions()
    db.session.commit()
    logout_user()
    session.clear()
    flash("You are logged out.", "info")
    return redirect(url_for("auth.login"), code=303)


class PasswordForm(FlaskForm):
    current = PasswordField("Current password", validators=[InputRequired()])
    new = PasswordField("New password", validators=[InputRequired()])

    def validate_current(self, field):
        if not current_user.check_password(field.data or ""):
            raise ValidationError("That is not your current password.")

    def validate_new(self, field):
        if problem := passwords.problem(field.data or "", current_user.email, current_user.name):
            raise ValidationError(problem)


@bp.route("/account", methods=["GET", "POST"])
@login_required
def account():
    """The organizer's account: a new password (which ends every other session), and log out everywhere."""
    form = PasswordForm()
    if form.validate_on_submit():
        organizer = current_user._get_current_object()
        organizer.set_password(form.new.data)
        organizer.end_sessions()
        db.session.commit()
        start_session(organizer)  # this browser stays logged in; every other session ends
        flash("Password changed. Every other session is logged out.", "success")
        return redirect(url_for("auth.account"), code=303)
    return render("auth/account.html", form=form), 200 if request.method in ("GET", "HEAD") else 422


@bp.post("/logout-everywhere")
@login_required
def logout_everywhere():
    current_user.end_sessions()
    db.session.commit()
    logout_user()
    session.clear()
    flash("You are logged out on every device.", "info")
    return redirect(url_for("auth.login"), code=303)


def _safe_next(target: str | None) -> str | None:
    """Only follow a ?next= that stays on this site."""
    if not target:
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return None
    return target
