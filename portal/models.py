"""Every model, imported in one place so migrations and the shell see them all."""
from portal.auth.models import LoginThrottle, Organizer
from portal.channels.models import ChannelMapping, ChannelWebhook, SalesChannel
from portal.events.models import DiscountCode, Event, TicketType
from portal.orders.models import Attendee, Order, Ticket
from portal.sync.models import BackfillRun, DeliveryAttempt, KlaviyoConnection, OutboxEvent

__all__ = [
    "Attendee", "BackfillRun", "ChannelMapping", "ChannelWebhook", "DeliveryAttempt", "DiscountCode", "Event",
    "KlaviyoConnection", "LoginThrottle", "Order", "Organizer", "OutboxEvent", "SalesChannel", "Ticket", "TicketType",
]
