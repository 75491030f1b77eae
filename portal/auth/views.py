"""Sign up, log in, log out."""
import hashlib
from datetime import timedelta
from urllib.parse import urlsplit

from flask import Blueprint, current_app, flash, redirect, request, url_for
from flask_login import login_required, login_user, logout_user
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import EmailField, PasswordField, StringField
from wtforms.validators import DataRequired, Email, InputRequired, Length

from portal.auth.models import LoginThrottle, Organizer
from portal.extensions import db
from portal.types import utcnow
from portal.htmx import render

bp = Blueprint("auth", __name__, url_prefix="/auth")


class SignupForm(FlaskForm):
    name = StringField("Organization or your name", filters=[lambda v: v.strip() if isinstance(v, str) else v],
                       validators=[DataRequired(), Length(max=120)])
    email = EmailField("E-mail", validators=[InputRequired(), Email(check_deliverability=False), Length(max=254)])
    password = PasswordField("Password", validators=[InputRequired(), Length(min=10, max=200,
                             message="Use at least 10 characters.")])


class LoginForm(FlaskForm):
    email = EmailField("E-mail", validators=[InputRequired(), Length(max=254)])
    password = PasswordField("Password", validators=[InputRequired(), Length(max=200)])


@bp.route("/signup", methods=["GET", "POST"])
def signup():
    form = SignupForm()
    if form.validate_on_submit():
        email = form.email.data.strip().lower()
        if db.session.scalar(select(Organizer).where(Organizer.email == email)):
            form.email.errors.append("An account with this e-mail exists already. Log in instead.")
        else:
            organizer = Organizer(name=form.name.data.strip(), email=email)
            organizer.set_password(form.password.data)
            db.session.add(organizer)
            db.session.commit()
            login_user(organizer)
            flash("Welcome! Your account is ready.", "success")
            return redirect(url_for("events.index"), code=303)
    return render("auth/signup.html", form=form), 200 if request.method == "GET" else 422


@bp.route("/login", methods=["GET", "POST"])
def login():
    form = LoginForm()
    if form.validate_on_submit():
        email = form.email.data.strip().lower()
        key = _throttle_key(email)
        throttle = db.session.get(LoginThrottle, key)
        now = utcnow()
        if throttle and throttle.locked_until and throttle.locked_until > now:
            minutes = int((throttle.locked_until - now).total_seconds() // 60) + 1
            form.password.errors.append(
                f"Too many failed attempts. Wait {minutes} minute{'s' if minutes != 1 else ''} and try again.")
            return render("auth/login.html", form=form), 429
        organizer = db.session.scalar(select(Organizer).where(Organizer.email == email))
        if organizer and organizer.check_password(form.password.data):
            if throttle:
                db.session.delete(throttle)
                db.session.commit()
            login_user(organizer)
            return redirect(_safe_next(request.args.get("next")) or url_for("integrations.index"), code=303)
        _record_failure(key, throttle, now)
        form.password.errors.append("That e-mail and password do not match an account.")
        return render("auth/login.html", form=form), 401
    return render("auth/login.html", form=form), 200 if request.method == "GET" else 422


@bp.post("/logout")
@login_required
def logout():
    logout_user()
    flash("You are logged out.", "info")
    return redirect(url_for("auth.login"), code=303)


def _throttle_key(email: str) -> str:
    """Failures count per e-mail and client address, so a stranger can't lock an organizer out."""
    return hashlib.sha256(f"{email}|{request.remote_addr}".encode()).hexdigest()


def _record_failure(key: str, throttle: LoginThrottle | None, now) -> None:
    window = timedelta(seconds=current_app.config["LOGIN_LOCK_SECONDS"])
    if throttle is None or now - throttle.first_failure_at > window:
        if throttle is None:
            throttle = LoginThrottle(key=key)
            db.session.add(throttle)
        throttle.failures, throttle.first_failure_at, throttle.locked_until = 0, now, None
    throttle.failures += 1
    if throttle.failures >= current_app.config["LOGIN_MAX_FAILURES"]:
        throttle.locked_until = now + window
    db.session.commit()


def _safe_next(target: str | None) -> str | None:
    """Only follow a ?next= that stays on this site."""
    if not target:
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return None
    return target
