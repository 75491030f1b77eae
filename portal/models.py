"""Every model, imported in one place so migrations and the shell see them all."""
from portal.auth.models import LoginThrottle, Organizer
from portal.events.models import DiscountCode, Event, TicketType
from portal.integrations.models import KlaviyoConnection
from portal.orders.models import Attendee, Order, Ticket
from portal.sync.models import BackfillRun, DeliveryAttempt, OutboxEvent

__all__ = [
    "Attendee", "BackfillRun", "DeliveryAttempt", "DiscountCode", "Event", "KlaviyoConnection", "LoginThrottle",
    "Order", "Organizer", "OutboxEvent", "Ticket", "TicketType",
]
