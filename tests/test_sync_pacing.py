"""Bulk pacing under sustained traffic (portal/sync/limiter.py reserve, portal/sync/jobs.py _send_paced): Bulk Create
requests that are not full go out at most one per BULK_SPACING per Klaviyo installation, across every worker, and
take in what fell due while they waited; full ones are not held back; and a small claim goes by Bulk instead of
waiting when Create Event's budget is spent. Against a real Redis, real worker processes and the sandbox (with
Klaviyo's real rate limits) over HTTP."""
import time
import uuid

import pytest
import requests

from portal.extensions import db
from portal.sync import limiter
from portal.sync.jobs import BULK_SPACING
from tests.conftest import sandbox_received, sync_settled, wait_for
from tests.test_faults import outbox_counts, place_orders, request_log

BULK, SINGLE = "/api/event-bulk-create-jobs", "/api/events"


def _installation() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


# --- the reservation itself -------------------------------------------------------------------------------
# A spacing of 10 s, so that however slowly a loaded machine runs the calls, the figures are far apart.

def test_two_reservations_in_a_row_are_spaced(app):
    installation = _installation()
    with app.app_context():
        first = limiter.reserve(installation, "bulk", 10.0, full=False)
        second = limiter.reserve(installation, "bulk", 10.0, full=False)
        third = limiter.reserve(installation, "bulk", 10.0, full=False)
        assert first == 0
        assert 8.0 < second <= 10.0  # the slot after the first
        assert 18.0 < third <= 20.0  # and the one after that: every caller gets a slot of its own
        assert 18.0 < limiter.slot_in(installation, "bulk") <= 20.0


def test_a_full_request_skips_the_spacing_and_the_next_one_is_spaced_from_it(app):
    installation = _installation()
    with app.app_context():
        assert limiter.reserve(installation, "bulk", 10.0, full=True) == 0
        assert limiter.reserve(installation, "bulk", 10.0, full=True) == 0  # full ones never wait here
        assert 8.0 < limiter.reserve(installation, "bulk", 10.0, full=False) <= 10.0  # spaced from the full one
        assert limiter.reserve(installation, "bulk", 10.0, full=True) == 0  # even while a paced one waits
        assert 8.0 < limiter.slot_in(installation, "bulk") <= 10.0  # which keeps its slot


def test_installations_and_endpoints_are_paced_independently(app):
    one, other = _installation(), _installation()
    with app.app_context():
        assert limiter.reserve(one, "bulk", 10.0, full=False) == 0
        assert limiter.reserve(other, "bulk", 10.0, full=False) == 0
        assert limiter.reserve(one, "subscribe", 10.0, full=False) == 0
        assert 8.0 < limiter.reserve(one, "bulk", 10.0, full=False) <= 10.0
        assert 8.0 < limiter.reserve(other, "bulk", 10.0, full=False) <= 10.0


def test_a_claim_joins_the_worker_already_waiting_for_a_slot(app):
    installation = _installation()
    with app.app_context():
        assert limiter.slot_in(installation, "bulk") < 0  # nothing reserved yet
        assert limiter.reserve(installation, "bulk", 10.0, full=False, join_margin=0.001) == 0  # now: nobody waits
        waiting = limiter.reserve(installation, "bulk", 10.0, full=False, join_margin=0.001)
        assert 8.0 < waiting <= 10.0  # the slot went out at once, so this one waits for the next
        joined = limiter.reserve(installation, "bulk", 10.0, full=False, join_margin=0.001)
        assert -10.0 <= joined < -8.0  # someone waits for a slot ~10 s away: hand the rows to it, take no slot
        assert 8.0 < limiter.slot_in(installation, "bulk") <= 10.0  # no further slot was taken


def test_sustained_and_blocked_marks(app):
    installation = _installation()
    with app.app_context():
        assert not limiter.sustained(installation, "bulk")
        limiter.mark_sustained(installation, "bulk", 30)
        assert limiter.sustained(installation, "bulk") and not limiter.sustained(installation, "events")
        assert not limiter.blocked(installation, "events")
        limiter.block(installation, "events", 30)
        assert limiter.blocked(installation, "events")


# --- real workers -------------------------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def _no_faults(sandbox):
    yield
    requests.delete(f"{sandbox.url}/_sandbox/faults", timeout=5)
    requests.post(f"{sandbox.url}/_sandbox/config", json={"enforce_rate_limits": True}, timeout=5)


def _all_sent_once(app, sandbox_url, expected, timeout=60):
    wait_for(lambda: outbox_counts(app) == {"sent": len(expected)}, timeout=timeout, message="every row marked sent")
    wait_for(lambda: sync_settled(app), timeout=timeout, message="no job queued or running")
    assert sandbox_received(sandbox_url) == dict.fromkeys(expected, 1)  # each accepted, none sent twice


@pytest.mark.slow
def test_a_steady_trickle_goes_out_in_paced_bulk_requests(app, connected, make_event, sandbox, start_worker):
    """Two workers, every claim by Bulk (threshold 0), one order every 50 ms for about 5 s: without pacing that is
    one Bulk request per order or so (~100, within the limiter's 9/s); paced, at most one per BULK_SPACING."""
    for _ in range(2):
        start_worker(SYNC_SINGLE_THRESHOLD=0)
    event_id = make_event(connected, capacity=1000)
    wait_for(lambda: _workers_idle(app), message="both workers up")
    expected = set()
    started = time.time()
    for index in range(100):
        expected |= place_orders_from(app, event_id, index)
        time.sleep(0.05)
    _all_sent_once(app, sandbox.url, expected)
    bulk = sorted(entry["ts"] for entry in request_log(sandbox.url, since=started) if entry["path"] == BULK)
    singles = [entry for entry in request_log(sandbox.url, since=started) if entry["path"] == SINGLE]
    assert not singles
    span = bulk[-1] - bulk[0]
    # Slots are BULK_SPACING apart; what each worker does between its slot and the wire (claiming, building the
    # body) only shifts a request a little, never adds one: allow two more than the slots in the span.
    assert len(bulk) <= span / BULK_SPACING + 3, (len(bulk), span)
    assert len(expected) / len(bulk) >= 4, (len(expected), len(bulk))  # many events a request, not one order each
    assert all(entry["status"] == 202 for entry in request_log(sandbox.url, since=started))  # no 429


@pytest.mark.slow
def test_a_small_claim_goes_by_bulk_when_the_single_budget_is_spent(app, connected, make_event, sandbox,
                                                                   start_worker):
    """Create Event's budget (ours: 3,150 a minute) already spent: a claim under the single threshold goes out as
    one Bulk request at once, instead of being released to wait for the minute to pass."""
    from portal.sync.connection import connection_for, installation_key

    with app.app_context():
        installation = installation_key(connection_for(connected))
        _spend(installation, "events")
        assert limiter.try_acquire(installation, "events") > 1  # singles would wait for the window to free
    expected = place_orders(app, make_event(connected), 2)  # 6 events, under the threshold of 10
    assert len(expected) == 6
    started = time.time()
    start_worker()
    _all_sent_once(app, sandbox.url, expected, timeout=20)
    sends = [entry for entry in request_log(sandbox.url, since=started - 5) if entry["path"] in (BULK, SINGLE)]
    assert [(entry["path"], entry["status"]) for entry in sends] == [(BULK, 202)], sends


def _spend(installation: str, endpoint: str) -> None:
    """Fill our limiter's steady window for this endpoint, as if that many requests had just gone out."""
    from portal.sync.queue import redis_connection

    burst, steady = limiter.pace(endpoint)
    r = redis_connection()
    seconds, micros = r.time()
    now = seconds * 1000 + micros // 1000
    keys = limiter._keys(installation, endpoint)
    r.zadd(keys[1], {f"spent-{i}": now for i in range(steady)})
    r.pexpire(keys[1], 61000)


def place_orders_from(app, event_id, index):
    """One order (3 events) through place_order, numbered so that every order has its own buyer."""
    from portal.events.models import Event
    from portal.klaviyo.payloads import build_order_events
    from portal.orders.service import AttendeeInput, OrderInput, place_order, snapshot

    with app.app_context():
        event = db.session.get(Event, event_id)
        ticket_type = event.ticket_types[0]
        order = place_order(event, OrderInput(first_name="Buyer", last_name=str(index),
                                              email=f"buyer{index}@buyers.example", phone=None,
                                              lines=[(ticket_type, AttendeeInput("Guest", str(index),
                                                                                 f"guest{index}@guests.example"))]))
        return {e.unique_id for e in build_order_events(snapshot(order)).events}


def _workers_idle(app) -> bool:
    from rq import Worker

    from portal.sync.queue import queue

    with app.app_context():
        workers = Worker.all(queue=queue())
        return len(workers) == 2 and all(w.get_state() == "idle" for w in workers)
