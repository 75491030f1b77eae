"""The Data Reference's use cases as Klaviyo drafts: pure builders of Create Flow and Create Segment bodies.

Each body follows Klaviyo's official FlowDefinition and SegmentDefinition (create_flow.json and
create_segment.json, vendored with the sandbox); golden tests pin every one and validate it against
those slices. Flows are drafts and so are their e-mails: nothing reaches anyone until the organizer
reviews them in Klaviyo and sets them live. Nothing here touches the network or the database; the
metric ids come in from the caller, who looked them up (GET /api/metrics).
"""
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from portal.klaviyo import lifecycle, payloads, starter_emails
from portal.klaviyo.checkout import STARTED_CHECKOUT
from portal.klaviyo.payloads import ORDERED_EXPERIENCE, PLACED_ORDER, REGISTERED_ATTENDEE
from portal.klaviyo.starter_emails import StarterEmail

# Every metric the portal sends today; a recipe whose metric is not among them waits for it.
SENT_METRICS = payloads.METRICS + lifecycle.METRICS + (STARTED_CHECKOUT,)
NEXT_EVENT_START = "NextEventStartAt"  # the profile date property reminder flows are built on
SEND_TIME = "09:00:00"  # date-triggered e-mails go out at 9:00 in the person's own time zone

FLOW, SEGMENT = "flow", "segment"
VIP_DEFAULT, AMOUNT_DEFAULT, REPEAT_TIMES = "VIP", "200", 2


@dataclass(frozen=True)
class Recipe:
    key: str
    kind: str  # FLOW or SEGMENT
    title: str
    summary: str  # what it does, in plain words
    trigger: str  # what starts it (a flow) or who is in it (a segment)
    needs: str  # what it needs from the portal's data
    todo: str  # what the organizer must still do in Klaviyo
    metrics: tuple[str, ...]  # the metrics whose ids it is built from
    email: StarterEmail | None = None
    option: str | None = None  # the one thing the organizer may set first: "text", "event" or "amount"

    @property
    def waits_for(self) -> str | None:
        """Why it cannot be offered yet (a metric the portal does not send yet), or None."""
        missing = [m for m in self.metrics if m not in SENT_METRICS]
        if not missing:
            return None
        return (f"Waits for {' and '.join(missing)} events, which the portal does not send yet. It will be offered "
                "here as soon as it does.")


REVIEW = ("Open it in Klaviyo, design the e-mail (paste the starter text shown here), check the sender and the "
          "wording, then set the flow live.")

RECIPES = (
    Recipe("order_confirmation", FLOW, "Order Confirmation",
           "E-mails the buyer right after every purchase: the event, the date and venue, each ticket and the total.",
           "Placed Order, with no delay", "Placed Order events (sent for every order)",
           REVIEW + " Klaviyo may ask you to mark it transactional.", (PLACED_ORDER,),
           starter_emails.ORDER_CONFIRMATION),
    Recipe("event_reminder", FLOW, "Event Reminder",
           "Reminds every ticket holder of their next event the day before, at 9:00 in their own time zone.",
           "the profile date NextEventStartAt, 1 day before",
           "the NextEventStartAt profile property (kept on every buyer's and attendee's profile)",
           REVIEW, (), starter_emails.EVENT_REMINDER),
    Recipe("attendee_welcome", FLOW, "Attendee Welcome",
           "Welcomes attendees whose ticket someone else bought, with their ticket, the date and the venue.",
           "Registered Attendee, with no delay",
           "Registered Attendee events (sent for attendees other than the buyer)", REVIEW, (REGISTERED_ATTENDEE,),
           starter_emails.ATTENDEE_WELCOME),
    Recipe("post_event_survey", FLOW, "Post-Event Survey",
           "Asks ticket holders how it went, the day after their event.",
           "the profile date NextEventStartAt, on the day, then a 1-day wait",
           "the NextEventStartAt profile property", REVIEW + " Add the link to your survey first.", (),
           starter_emails.POST_EVENT_SURVEY),
    Recipe("abandoned_checkout", FLOW, "Abandoned Checkout",
           "Follows up 4 hours after someone starts a checkout, unless they placed an order since.",
           "Started Checkout, then 4 hours, only if no Placed Order since starting the flow",
           "Started Checkout events", REVIEW, (STARTED_CHECKOUT, PLACED_ORDER), starter_emails.ABANDONED_CHECKOUT),
    Recipe("vip_segment", SEGMENT, "VIP Ticket Holders",
           "Everyone who bought a ticket whose type contains the text you choose (VIP unless you change it).",
           "Ordered Experience at least once where ExperienceName contains the text",
           "Ordered Experience events (one per ticket)", "Use it for early access or exclusive offers.",
           (ORDERED_EXPERIENCE,), option="text"),
    Recipe("event_segment", SEGMENT, "Attendees of an event",
           "Everyone who bought tickets to, or was registered for, the event you pick.",
           "Placed Order or Registered Attendee at least once where EventName equals the event's name",
           "Placed Order and Registered Attendee events", "Use it for campaigns about that event.",
           (PLACED_ORDER, REGISTERED_ATTENDEE), option="event"),
    Recipe("high_value_segment", SEGMENT, "High-Value Customers",
           "Buyers who placed an order worth more than the amount you choose.",
           "Placed Order at least once where $value is greater than the amount", "Placed Order events",
           "Use it to thank and reward your big spenders.", (PLACED_ORDER,), option="amount"),
    Recipe("repeat_attendees", SEGMENT, "Repeat Attendees",
           "Buyers who have ordered at least twice: your loyal audience.", "Placed Order at least 2 times",
           "Placed Order events", "Use it for loyalty rewards and presales.", (PLACED_ORDER,)),
)
BY_KEY = {recipe.key: recipe for recipe in RECIPES}


def base_key(item_key: str) -> str:
    """The recipe of an item key: "event_segment:42" is the event segment for event 42."""
    return item_key.split(":", 1)[0]


def recipe_for(item_key: str) -> Recipe:
    return BY_KEY[base_key(item_key)]


# --- options the organizer sets -----------------------------------------------------------------

def vip_text(raw: str | None) -> tuple[str | None, str | None]:
    """(the text, None) or (None, why not)."""
    text = " ".join((raw if raw is not None else VIP_DEFAULT).split())
    if not text:
        return None, "Type the text the ticket type's name must contain, for example VIP."
    if len(text) > 100:
        return None, "Keep the text under 100 characters."
    return text, None


def amount(raw: str | None) -> tuple[str | None, str | None]:
    """(the amount as a plain decimal string, None) or (None, why not)."""
    text = (raw if raw is not None else AMOUNT_DEFAULT).strip().replace(",", "")
    try:
        value = Decimal(text)
    except InvalidOperation:
        return None, "Type the amount as a number, for example 200."
    if not value.is_finite() or value <= 0 or value > Decimal("1000000"):
        return None, "Type an amount above 0 and at most 1,000,000."
    if value != value.quantize(Decimal("0.01")):
        return None, "Type the amount with at most two decimals."
    return format(value.normalize(), "f"), None


def name(item_key: str, product: str, options: dict) -> str:
    """The object's name in Klaviyo, prefixed with the product's name as Klaviyo asks of apps."""
    recipe = recipe_for(item_key)
    if recipe.key == "vip_segment":
        text = options.get("text", VIP_DEFAULT)
        title = recipe.title if text == VIP_DEFAULT else f"{text} Ticket Holders"
    elif recipe.key == "event_segment":
        event_name = options["event_name"]
        title = f"{event_name[:80]}{'…' if len(event_name) > 80 else ''} attendees"
    elif recipe.key == "high_value_segment":
        title = f"{recipe.title} (orders over {options.get('amount', AMOUNT_DEFAULT)})"
    else:
        title = recipe.title
    return f"{product}: {title}"


# --- flows ----------------------------------------------------------------------------------------

def _metric_trigger(metric_id: str) -> dict:
    return {"type": "metric", "id": metric_id, "trigger_filter": None}


def _date_trigger(days_before: int) -> dict:
    return {"type": "date", "date_field_type": "profile-property", "date_profile_property": NEXT_EVENT_START,
            "timedelta_unit_before_date": "days", "timedelta_value_before_date": days_before,
            "recurrence_frequency": "never", "timezone": "profile", "trigger_time": SEND_TIME}


def _target_date(temporary_id: str, next_id: str) -> dict:
    return {"temporary_id": temporary_id, "type": "target-date",
            "data": {"timezone": "profile", "target_time": SEND_TIME}, "links": {"next": next_id}}


def _delay(temporary_id: str, value: int, unit: str, next_id: str) -> dict:
    return {"temporary_id": temporary_id, "type": "time-delay",
            "data": {"unit": unit, "value": value, "timezone": "profile"}, "links": {"next": next_id}}


def _email(temporary_id: str, email: StarterEmail, smart_sending: bool) -> dict:
    """A draft e-mail: it sends nothing until the organizer sets it (and the flow) live."""
    message = {"name": email.name, "subject_line": email.subject, "preview_text": email.preview,
               "smart_sending_enabled": smart_sending, "transactional": False, "add_tracking_params": False}
    return {"temporary_id": temporary_id, "type": "send-email", "data": {"message": message, "status": "draft"},
            "links": {"next": None}}


def _flow(flow_name: str, trigger: dict, actions: list[dict], reentry: dict | None = None,
          profile_filter: dict | None = None) -> dict:
    definition = {"triggers": [trigger], "profile_filter": profile_filter, "actions": actions,
                  "entry_action_id": actions[0]["temporary_id"], "reentry_criteria": reentry}
    return {"data": {"type": "flow", "attributes": {"name": flow_name, "definition": definition}}}


EVERY_TIME = {"duration": 0, "unit": "alltime"}  # "a duration of 0 means re-entry is allowed"


def _flow_body(key: str, flow_name: str, ids: dict[str, str]) -> dict:
    if key == "order_confirmation":
        return _flow(flow_name, _metric_trigger(ids[PLACED_ORDER]),
                     [_email("confirmation", starter_emails.ORDER_CONFIRMATION, False)], EVERY_TIME)
    if key == "attendee_welcome":
        return _flow(flow_name, _metric_trigger(ids[REGISTERED_ATTENDEE]),
                     [_email("welcome", starter_emails.ATTENDEE_WELCOME, False)], EVERY_TIME)
    if key == "event_reminder":
        return _flow(flow_name, _date_trigger(1),
                     [_target_date("day-before", "reminder"), _email("reminder", starter_emails.EVENT_REMINDER, False)])
    if key == "post_event_survey":
        return _flow(flow_name, _date_trigger(0),
                     [_target_date("event-day", "day-after"), _delay("day-after", 1, "days", "survey"),
                      _email("survey", starter_emails.POST_EVENT_SURVEY, True)])
    if key == "abandoned_checkout":
        no_order_since = {"type": "profile-metric", "metric_id": ids[PLACED_ORDER], "measurement": "count",
                          "measurement_filter": {"type": "numeric", "operator": "equals", "value": 0},
                          "timeframe_filter": {"type": "date", "operator": "flow-start"}}
        return _flow(flow_name, _metric_trigger(ids[STARTED_CHECKOUT]),
                     [_delay("wait", 4, "hours", "follow-up"),
                      _email("follow-up", starter_emails.ABANDONED_CHECKOUT, True)],
                     {"duration": 1, "unit": "week"}, {"condition_groups": [{"conditions": [no_order_since]}]})
    raise KeyError(key)


# --- segments -----------------------------------------------------------------------------------

def _did(metric_id: str, at_least: int, where: list[dict] | None = None) -> dict:
    """Someone who did this metric at least N times, ever (optionally: where a property matches)."""
    condition = {"type": "profile-metric", "metric_id": metric_id, "measurement": "count",
                 "measurement_filter": {"type": "numeric", "operator": "greater-than-or-equal", "value": at_least},
                 "timeframe_filter": {"type": "date", "operator": "alltime"}}
    if where:
        condition["metric_filters"] = where
    return condition


def _segment(segment_name: str, *groups: list[dict]) -> dict:
    """Every group must hold; the conditions inside one group are alternatives."""
    definition = {"condition_groups": [{"conditions": conditions} for conditions in groups]}
    return {"data": {"type": "segment", "attributes": {"name": segment_name, "definition": definition}}}


def _segment_body(key: str, segment_name: str, ids: dict[str, str], options: dict) -> dict:
    if key == "vip_segment":
        text = options.get("text", VIP_DEFAULT)
        return _segment(segment_name, [_did(ids[ORDERED_EXPERIENCE], 1, [
            {"property": "ExperienceName", "filter": {"type": "string", "operator": "contains", "value": text}}])])
    if key == "event_segment":
        same_event = [{"property": "EventName",
                       "filter": {"type": "string", "operator": "equals", "value": options["event_name"]}}]
        return _segment(segment_name, [_did(ids[PLACED_ORDER], 1, same_event),
                                       _did(ids[REGISTERED_ATTENDEE], 1, same_event)])
    if key == "high_value_segment":
        over = payloads.number(Decimal(options.get("amount", AMOUNT_DEFAULT)))
        return _segment(segment_name, [_did(ids[PLACED_ORDER], 1, [
            {"property": "$value", "filter": {"type": "numeric", "operator": "greater-than", "value": over}}])])
    if key == "repeat_attendees":
        return _segment(segment_name, [_did(ids[PLACED_ORDER], REPEAT_TIMES)])
    raise KeyError(key)


def build(item_key: str, metric_ids: dict[str, str], product: str, options: dict | None = None) -> dict:
    """The Create Flow or Create Segment body of one recipe. Raises KeyError for a metric id not given."""
    options = options or {}
    recipe = recipe_for(item_key)
    object_name = name(item_key, product, options)
    if recipe.kind == FLOW:
        return _flow_body(recipe.key, object_name, metric_ids)
    return _segment_body(recipe.key, object_name, metric_ids, options)
