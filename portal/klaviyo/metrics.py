"""What each metric the portal sends is for, in the organizer's words: shown next to every event on the order
page, the confirmation's sync panel and the in-app guide. Pure data, like the payload builders."""
from portal.klaviyo.checkout import STARTED_CHECKOUT
from portal.klaviyo.lifecycle import CANCELLED_ORDER, CANCELLED_REGISTRATION, EVENT_CHANGED, REFUNDED_ORDER
from portal.klaviyo.payloads import ORDERED_EXPERIENCE, PLACED_ORDER, REGISTERED_ATTENDEE
from portal.klaviyo.subscriptions import LIST_SUBSCRIPTION

PURPOSE = {
    PLACED_ORDER: "Starts the order confirmation and reminder flows, and counts the order's value as revenue.",
    ORDERED_EXPERIENCE: "One per ticket, so segments and flows can pick people by ticket type (VIP, for example).",
    REGISTERED_ATTENDEE: "Gives an attendee who did not buy their own profile, for an attendee welcome flow.",
    CANCELLED_ORDER: "Tells Klaviyo the order is off: reminder flows can stop and a cancellation e-mail can start.",
    REFUNDED_ORDER: "Records the money given back on the buyer's profile, for a refund e-mail.",
    CANCELLED_REGISTRATION: "This attendee no longer has a ticket, so they can leave reminder flows.",
    EVENT_CHANGED: ("Tells a ticket holder that the time or the venue changed, for a \u201cyour event has moved\u201d "
                    "e-mail."),
    LIST_SUBSCRIPTION: "Subscribes the purchaser, who ticked the marketing box, to the Klaviyo list you chose.",
    STARTED_CHECKOUT: "A buyer chose tickets and gave an e-mail but did not order, for an abandoned-checkout e-mail.",
}


def purpose(metric: str) -> str:
    """What Klaviyo uses this metric for, as a sentence, or "" for one we don't know."""
    return PURPOSE.get(metric, "")
