"""Every model, imported in one place so migrations and the shell see them all."""
from portal.auth.models import LoginThrottle, Organizer
from portal.channels.models import ChannelMapping, ChannelWebhook, SalesChannel
from portal.events.models import DiscountCode, Event, EventChange, TicketType
from portal.orders.models import Attendee, Order, Refund, RefundLine, Ticket, Transfer
from portal.sync.models import BackfillRun, DeliveryAttempt, KlaviyoConnection, OutboxEvent

__all__ = [
    "Attendee", "BackfillRun", "ChannelMapping", "ChannelWebhook", "DeliveryAttempt", "DiscountCode", "Event",
    "EventChange", "KlaviyoConnection", "LoginThrottle", "Order", "Organizer", "OutboxEvent", "Refund", "RefundLine",
    "SalesChannel", "Ticket", "TicketType", "Transfer",
]
