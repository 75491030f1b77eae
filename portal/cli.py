"""Command-line tasks: flask seed-demo."""
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import click
from sqlalchemy import select

from portal.auth.models import Organizer
from portal.events.models import Event, TicketType
from portal.extensions import db


@click.command("seed-demo")
@click.option("--email", required=True, help="The demo organizer's e-mail.")
@click.option("--password", required=True, help="The demo organizer's password.")
@click.option("--name", default="Demo Festival Co.", show_default=True)
def seed_demo(email, password, name):
    """Create a demo organizer with a live event and two ticket types (safe to run again)."""
    email = email.strip().lower()
    organizer = db.session.scalar(select(Organizer).where(Organizer.email == email))
    if organizer is None:
        organizer = Organizer(name=name, email=email)
        db.session.add(organizer)
    organizer.set_password(password)
    db.session.flush()
    event = db.session.scalar(select(Event).where(Event.organizer_id == organizer.id, Event.name == "Summer Music Festival 2027"))
    if event is None:
        start = datetime(2027, 7, 15, 18, 0, tzinfo=timezone.utc)
        event = Event(organizer_id=organizer.id, name="Summer Music Festival 2027", venue="Central Park, New York",
                      timezone="America/New_York", starts_at=start, ends_at=start + timedelta(hours=5),
                      currency="USD", status="live", went_live_at=datetime.now(timezone.utc),
                      description="Three stages, twenty bands, one long summer evening.")
        event.ticket_types = [
            TicketType(name="General Admission", price=Decimal("75.00"), fee=Decimal("5.00"), capacity=500),
            TicketType(name="VIP", price=Decimal("150.00"), fee=Decimal("10.00"), capacity=50),
        ]
        db.session.add(event)
    db.session.commit()
    click.echo(f"Demo organizer {email} is ready, with the live event “{event.name}”.")


def init_app(app):
    app.cli.add_command(seed_demo)
