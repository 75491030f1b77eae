"""Every model, imported in one place so migrations and the shell see them all."""
from portal.auth.models import LoginThrottle, Organizer
from portal.channels.models import ChannelMapping, ChannelWebhook, SalesChannel
from portal.consent.models import ConsentWording, ListSettings, OrderConsent
from portal.events.models import DiscountCode, Event, EventChange, TicketType
from portal.orders.models import Attendee, Order, Refund, RefundLine, Ticket, Transfer
from portal.sync.models import BackfillRun, DeliveryAttempt, KlaviyoConnection, OutboxEvent
from portal.sync.setup_models import SetupItem
from portal.sync.checkout_models import CheckoutSession, KlaviyoOptions
from portal.sync.health_models import EventCheck, Incident, MetricGuard

__all__ = [
    "Attendee", "BackfillRun", "ChannelMapping", "ChannelWebhook", "DeliveryAttempt", "DiscountCode", "Event",
    "EventChange", "KlaviyoConnection", "LoginThrottle", "Order", "Organizer", "OutboxEvent", "Refund", "RefundLine",
    "SalesChannel", "SetupItem", "Ticket", "TicketType", "Transfer",
    "CheckoutSession", "EventCheck", "Incident", "KlaviyoOptions", "MetricGuard",
    "ConsentWording", "ListSettings", "OrderConsent",
]
