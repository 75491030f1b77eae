"""Starter e-mails for the recipes' flows, written with exactly the Data Reference's properties.

The subject and preview text go into the flow (Klaviyo's FlowEmail has no body field: the body is a
template, made in Klaviyo's editor); the body is shown in the portal and in docs/flows.md to paste
there. So the organizer edits wording, not plumbing: every ``{{ ... }}`` below names a property the
portal really sends (tests/test_recipes.py holds them to the payload builders).
"""
from dataclasses import dataclass


@dataclass(frozen=True)
class StarterEmail:
    name: str  # the e-mail's name inside the flow
    subject: str
    preview: str
    body: str  # Klaviyo template language


ORDER_CONFIRMATION = StarterEmail(
    name="Order confirmation",
    subject="Your tickets for {{ event|lookup:'EventName' }}",
    preview="Order {{ event|lookup:'OrderId' }}: {{ event|lookup:'AttendeeCount' }} ticket(s), "
            "{{ event|lookup:'EventStartAt' }}",
    body="""Hi {{ first_name|default:'there' }},

Thank you for your order {{ event|lookup:'OrderId' }}: {{ event|lookup:'AttendeeCount' }} ticket(s) for
{{ event|lookup:'EventName' }}.

When: {{ event|lookup:'EventStartAt' }} to {{ event|lookup:'EventEndAt' }}
Where: {{ event|lookup:'VenueName' }}

{% for item in event.Items %}{{ item.ProductName }}: {{ item.RowTotal }} {{ event|lookup:'Currency' }} \
(ticket {{ item.ItemPrice }}, fee {{ item.FeeAmount }})
{% endfor %}
Total paid: {{ event|lookup:'$value' }} {{ event|lookup:'Currency' }}

See you there!""",
)

EVENT_REMINDER = StarterEmail(
    name="Event reminder",
    subject="Tomorrow: {{ person|lookup:'NextEventName' }}",
    preview="It starts {{ person|lookup:'NextEventStartAt' }}",
    body="""Hi {{ first_name|default:'there' }},

A reminder that {{ person|lookup:'NextEventName' }} starts {{ person|lookup:'NextEventStartAt' }}.

Bring your ticket (on your phone is fine) and arrive a little early.

See you tomorrow!""",
)

POST_EVENT_SURVEY = StarterEmail(
    name="Post-event survey",
    subject="How was {{ person|lookup:'NextEventName' }}?",
    preview="Two minutes to tell us what you thought",
    body="""Hi {{ first_name|default:'there' }},

Thank you for coming to {{ person|lookup:'NextEventName' }} ({{ person|lookup:'NextEventStartAt' }}).

Would you tell us how it was? It takes two minutes: [add the link to your survey here].""",
)

ATTENDEE_WELCOME = StarterEmail(
    name="Attendee welcome",
    subject="You're registered for {{ event|lookup:'EventName' }}",
    preview="{{ event|lookup:'TicketName' }}, {{ event|lookup:'EventStartAt' }} at {{ event|lookup:'VenueName' }}",
    body="""Hi {{ first_name|default:'there' }},

Someone got you a ticket: you're registered for {{ event|lookup:'EventName' }}.

Your ticket: {{ event|lookup:'TicketName' }}
When: {{ event|lookup:'EventStartAt' }} to {{ event|lookup:'EventEndAt' }}
Where: {{ event|lookup:'VenueName' }}

[Add what to expect: doors, what to bring, how to get there.]""",
)

ABANDONED_CHECKOUT = StarterEmail(
    name="Abandoned checkout",
    subject="Your tickets for {{ event|lookup:'EventName' }} are waiting",
    preview="Finish your order before they sell out",
    body="""Hi {{ first_name|default:'there' }},

You started getting tickets for {{ event|lookup:'EventName' }} but didn't finish.
They're still available: [add the link to your Event Page here].""",
)
