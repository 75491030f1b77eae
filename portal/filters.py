"""How templates write times, durations, phone numbers and money, and which tab of the navigation is current."""
from zoneinfo import ZoneInfo

import phonenumbers
from flask import request


def when(moment):
    """A moment in UTC, written for people: 15 Jul 2026, 18:00 UTC."""
    return moment.strftime("%-d %b %Y, %H:%M UTC") if moment else "—"


def local(moment, zone: str):
    """A moment in the event's own time zone."""
    return moment.astimezone(ZoneInfo(zone)).strftime("%a %-d %b %Y, %-I:%M %p %Z") if moment else "—"


def duration(seconds):
    seconds = int(seconds or 0)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def phone(number):
    """An E.164 number written the international way: +1 617-555-0142."""
    try:
        return phonenumbers.format_number(phonenumbers.parse(number), phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    except phonenumbers.NumberParseException:
        return number


def money(amount, currency: str):
    return f"{currency} {amount:,.2f}"


def navigation():
    endpoint = request.endpoint or ""
    section = endpoint.split(".")[0]
    if section in {"orders"}:
        section = "events"
    return {"nav_section": section}


def init_app(app):
    for name, function in (("when", when), ("local", local), ("duration", duration), ("phone", phone),
                           ("money", money)):
        app.add_template_filter(function, name)
    app.context_processor(navigation)
