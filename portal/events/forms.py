"""Forms for events, ticket types and discount codes."""
from datetime import datetime
from decimal import Decimal
from functools import cache
from zoneinfo import ZoneInfo, available_timezones

import phonenumbers
from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    DateTimeLocalField,
    DecimalField,
    IntegerField,
    SelectField,
    StringField,
    TextAreaField,
)
from wtforms.fields.choices import SelectChoice
from wtforms.validators import (
    DataRequired,
    InputRequired,
    Length,
    NumberRange,
    Optional,
    Regexp,
    ValidationError,
)

CURRENCIES = ["USD", "EUR", "GBP", "CAD", "AUD", "NZD", "CHF", "SEK", "NOK", "DKK", "PLN", "CZK", "MXN", "BRL",
              "JPY", "SGD", "HKD", "ZAR", "INR"]
TIMEZONES = sorted(available_timezones() - {"localtime", "Factory"})


@cache
def countries() -> list[SelectChoice]:
    """Every country phone numbers can be read for, by English name, valued by its ISO code.

    Made on first use, not at import: phonenumbers' geocoder loads its whole geocoding table (about 100 MB of
    memory) to name the countries, and the sync worker, which imports this module with the app, never shows a
    form."""
    from phonenumbers import geocoder

    named = []
    for region in phonenumbers.SUPPORTED_REGIONS:
        example = phonenumbers.example_number(region)
        name = geocoder.country_name_for_number(example, "en") if example else ""
        named.append(SelectChoice(region, name or region))
    return sorted(named, key=lambda choice: choice.label)


def _two_places(field) -> None:
    if field.data is not None and field.data != field.data.quantize(Decimal("0.01")):
        raise ValidationError("Use at most two decimal places.")


def _strip(value):
    return value.strip() if isinstance(value, str) else value


class EventForm(FlaskForm):
    name = StringField("Event name", filters=[_strip], validators=[DataRequired(), Length(max=200)])
    venue = StringField("Venue or location", filters=[_strip], validators=[DataRequired(), Length(max=200)])
    timezone = SelectField("Time zone", choices=TIMEZONES, default="America/New_York")
    starts_at = DateTimeLocalField("Starts", format="%Y-%m-%dT%H:%M", validators=[InputRequired()])
    ends_at = DateTimeLocalField("Ends", format="%Y-%m-%dT%H:%M", validators=[InputRequired()])
    currency = SelectField("Currency", choices=CURRENCIES, default="USD")
    max_orders_per_email = IntegerField("Orders per e-mail address", validators=[Optional(), NumberRange(min=1, max=1000)],
                                        description="Leave empty for no limit.")
    country = SelectField("Country", choices=countries, default="US",
                          description="Buyers' phone numbers without a country code are read as this country's.")
    description = TextAreaField("Description", validators=[Optional(), Length(max=5000)])

    def validate_ends_at(self, field):
        if self.starts_at.data and field.data and field.data <= self.starts_at.data:
            raise ValidationError("The event must end after it starts.")

    def aware(self, value: datetime) -> datetime:
        """The typed local time, in the event's own time zone."""
        return value.replace(tzinfo=ZoneInfo(self.timezone.data))


class TicketTypeForm(FlaskForm):
    name = StringField("Ticket name", filters=[_strip], validators=[DataRequired(), Length(max=120)],
                       description='For example "General Admission" or "VIP"')
    price = DecimalField("Price", places=2, validators=[InputRequired(), NumberRange(min=Decimal("0"), max=Decimal("100000"))])
    fee = DecimalField("Service fee per ticket", places=2, default=Decimal("0"),
                       validators=[Optional(), NumberRange(min=Decimal("0"), max=Decimal("10000"))])
    capacity = IntegerField("Capacity", validators=[InputRequired(), NumberRange(min=1, max=1_000_000)])

    def validate_price(self, field):
        _two_places(field)

    def validate_fee(self, field):
        _two_places(field)


class DiscountForm(FlaskForm):
    code = StringField("Code", validators=[InputRequired(), Length(max=40),
                                           Regexp(r"^[A-Za-z0-9_-]+$", message="Letters, digits, - and _ only.")])
    kind = SelectField("Type", choices=[SelectChoice("percent", "Percent off"), SelectChoice("fixed", "Amount off per ticket")])
    amount = DecimalField("Amount", places=2, validators=[InputRequired(), NumberRange(min=Decimal("0.01"), max=Decimal("100000"))])

    def validate_amount(self, field):
        _two_places(field)
        if self.kind.data == "percent" and field.data is not None and field.data > 100:
            raise ValidationError("A percentage can be at most 100.")


class WidgetForm(FlaskForm):
    accent_color = StringField("Accent colour", validators=[InputRequired(), Regexp(r"^#[0-9a-fA-F]{6}$",
                               message="Use a colour like #4f46e5.")])
    button_label = StringField("Button label", filters=[_strip], validators=[DataRequired(), Length(max=40)])
    show_description = BooleanField("Show the event description")
